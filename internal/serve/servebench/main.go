// Command servebench drives a running closet serve for scripts/bench-serve:
// it submits trivial jobs from many tenants as fast as the API takes them
// (honouring 429 Retry-After), waits for every verdict, and prints
// throughput, submit-to-verdict latency and the lost and duplicated counts.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

type job struct {
	id, tok string
}

type view struct {
	ID       string    `json:"id"`
	State    string    `json:"state"`
	Verdict  string    `json:"verdict"`
	Runs     int       `json:"runs"`
	Created  time.Time `json:"created"`
	Finished time.Time `json:"finished"`
}

func main() {
	url := flag.String("url", "http://127.0.0.1:8080", "server")
	tokens := flag.String("tokens", "", "file with one token per line (one tenant each)")
	n := flag.Int("jobs", 1000, "jobs to submit")
	root := flag.String("root", "", "store path of the jobs' closure")
	label := flag.String("label", "", "label for the result line")
	cmd := flag.String("cmd", "true", "the jobs' command")
	flag.Parse()
	f, err := os.Open(*tokens)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var toks []string
	for sc := bufio.NewScanner(f); sc.Scan(); {
		if t := sc.Text(); t != "" {
			toks = append(toks, t)
		}
	}
	body, _ := json.Marshal(map[string]any{"roots": []string{*root}, "command": []string{*cmd}})
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 100}}
	var mu sync.Mutex
	var jobs []job
	var throttled int
	next := make(chan int, *n)
	for i := 0; i < *n; i++ {
		next <- i
	}
	close(next)
	t0 := time.Now()
	var wg sync.WaitGroup
	for c := range toks {
		wg.Add(1)
		go func(tok string) {
			defer wg.Done()
			for range next {
				for {
					req, _ := http.NewRequest("POST", *url+"/v1/jobs", bytes.NewReader(body))
					req.Header.Set("Authorization", "Bearer "+tok)
					resp, err := client.Do(req)
					if err != nil {
						fmt.Fprintln(os.Stderr, "submit:", err)
						time.Sleep(100 * time.Millisecond)
						continue
					}
					var r struct{ ID string }
					json.NewDecoder(resp.Body).Decode(&r)
					resp.Body.Close()
					if resp.StatusCode == 429 {
						s, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
						mu.Lock()
						throttled++
						mu.Unlock()
						time.Sleep(time.Duration(max(s, 1)) * time.Second)
						continue
					}
					if resp.StatusCode != 201 {
						fmt.Fprintln(os.Stderr, "submit: status", resp.StatusCode)
						os.Exit(1)
					}
					mu.Lock()
					jobs = append(jobs, job{r.ID, tok})
					mu.Unlock()
					break
				}
			}
		}(toks[c])
	}
	wg.Wait()
	submitted := time.Since(t0)
	// Wait until the queue is empty, asking /metrics once a second (cheap:
	// polling a thousand jobs would load the server being measured), then
	// read every job; latencies come from the server's own timestamps.
	for deadline := time.Now().Add(20 * time.Minute); time.Now().Before(deadline); time.Sleep(time.Second) {
		if left, err := queueLeft(client, *url); err == nil && left == 0 {
			break
		}
	}
	pending := append([]job(nil), jobs...)
	done := map[string]view{}
	deadline := time.Now().Add(20 * time.Minute)
	for len(pending) > 0 && time.Now().Before(deadline) {
		var still []job
		for _, j := range pending {
			req, _ := http.NewRequest("GET", *url+"/v1/jobs/"+j.id, nil)
			req.Header.Set("Authorization", "Bearer "+j.tok)
			resp, err := client.Do(req)
			if err != nil {
				still = append(still, j)
				continue
			}
			var v view
			json.NewDecoder(resp.Body).Decode(&v)
			resp.Body.Close()
			if v.State == "done" {
				done[j.id] = v
			} else {
				still = append(still, j)
			}
		}
		pending = still
		if len(pending) > 0 {
			time.Sleep(time.Second)
		}
	}
	var lat []float64
	var first, last time.Time
	verdicts := map[string]int{}
	runs := 0
	for _, v := range done {
		lat = append(lat, v.Finished.Sub(v.Created).Seconds())
		if first.IsZero() || v.Created.Before(first) {
			first = v.Created
		}
		if v.Finished.After(last) {
			last = v.Finished
		}
		verdicts[v.Verdict]++
		runs += v.Runs
	}
	sort.Float64s(lat)
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(p*float64(len(lat))))]
	}
	ids := map[string]bool{}
	for _, j := range jobs {
		ids[j.id] = true
	}
	span := last.Sub(first).Seconds()
	fmt.Printf("%s: %d jobs from %d tenants: submitted in %.2f s (%.0f/s, %d answers 429); end to end %.2f s = %.1f jobs/s; submit->verdict p50 %.3f s p99 %.3f s; lost %d, duplicated ids %d, extra runs %d; verdicts %v\n",
		*label, len(jobs), len(toks), submitted.Seconds(), float64(len(jobs))/submitted.Seconds(), throttled,
		span, float64(len(done))/span, pct(0.50), pct(0.99), len(jobs)-len(done), len(jobs)-len(ids), runs-len(done), verdicts)
	if len(jobs) != len(done) || len(ids) != len(jobs) || verdicts["OK"] != len(jobs) {
		os.Exit(1)
	}
}

// queueLeft reads closet_serve_queue_depth + closet_serve_running_jobs.
func queueLeft(client *http.Client, url string) (float64, error) {
	resp, err := client.Get(url + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var left float64
	found := 0
	for sc := bufio.NewScanner(resp.Body); sc.Scan(); {
		for _, name := range []string{"closet_serve_queue_depth ", "closet_serve_running_jobs "} {
			if v, ok := strings.CutPrefix(sc.Text(), name); ok {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					return 0, err
				}
				left += f
				found++
			}
		}
	}
	if found != 2 {
		return 0, fmt.Errorf("/metrics lacks the queue gauges")
	}
	return left, nil
}
