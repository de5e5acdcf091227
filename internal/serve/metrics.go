package serve

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the server's Prometheus figures, in a registry of its own so
// that several servers can live in one process (tests).
type metrics struct {
	reg       *prometheus.Registry
	submitted prometheus.Counter
	verdicts  *prometheus.CounterVec
	setup     prometheus.Histogram
	run       prometheus.Histogram
	latency   prometheus.Histogram
	// warmHits counts jobs that ran in a copy of a kept view (Result.WarmView).
	warmHits prometheus.Counter
}

func newMetrics(s *Server) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	buckets := []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}
	m.submitted = prometheus.NewCounter(prometheus.CounterOpts{Name: "closet_serve_jobs_submitted_total", Help: "Jobs accepted by this server's API."})
	m.verdicts = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "closet_serve_jobs_total", Help: "Jobs finished by this server, by tenant and verdict."}, []string{"tenant", "verdict"})
	m.setup = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "closet_serve_setup_seconds", Help: "Time a job's run took beyond the job's own wall time (resolve, closure, sandbox).", Buckets: buckets})
	m.run = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "closet_serve_run_seconds", Help: "Jobs' own wall time.", Buckets: buckets})
	m.latency = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "closet_serve_submit_to_verdict_seconds", Help: "From acceptance to the verdict's commit.", Buckets: buckets})
	m.warmHits = prometheus.NewCounter(prometheus.CounterOpts{Name: "closet_serve_warm_view_hits_total", Help: "Jobs started in a warm view: a copy of a cached store view of the same closure (closures of 64 paths or more)."})
	gauge := func(name, help, state string) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			q, r, err := depth(ctx, s.db.SQL)
			if err != nil {
				return -1
			}
			if state == StateRunning {
				return float64(r)
			}
			return float64(q)
		})
	}
	m.reg.MustRegister(m.submitted, m.verdicts, m.setup, m.run, m.latency, m.warmHits,
		gauge("closet_serve_queue_depth", "Jobs accepted and not yet started, on every machine.", StateQueued),
		gauge("closet_serve_running_jobs", "Jobs running, on every machine.", StateRunning))
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

func (m *metrics) done(tenant string, res Result, latency time.Duration) {
	m.verdicts.WithLabelValues(tenant, res.Verdict).Inc()
	if res.SetupTime > 0 {
		m.setup.Observe(res.SetupTime)
	}
	m.run.Observe(res.WallTime)
	m.latency.Observe(latency.Seconds())
	if res.WarmView {
		m.warmHits.Inc()
	}
}
