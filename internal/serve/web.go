package serve

import (
	"embed"
	"html/template"
	"net/http"
	"sort"
	"strconv"
	"time"
)

//go:embed web.html
var webFS embed.FS

var pages = template.Must(template.New("").Funcs(template.FuncMap{
	"when": func(t *time.Time) string {
		if t == nil {
			return ""
		}
		return t.Format("15:04:05")
	},
}).ParseFS(webFS, "web.html"))

const cookieName = "closet_token"

// The page is for people: a token logs in once and is kept in an HttpOnly,
// SameSite=Strict cookie; the API itself takes only bearer tokens.
func (s *Server) webRoutes(m *http.ServeMux) {
	m.HandleFunc("GET /{$}", s.page(s.dashboard))
	m.HandleFunc("GET /jobs/{id}", s.page(s.jobPage))
	m.HandleFunc("GET /ui/events", s.page(s.uiEvents))
	m.HandleFunc("POST /login", s.login)
	m.HandleFunc("POST /logout", func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", MaxAge: -1})
		http.Redirect(w, r, "/", http.StatusSeeOther)
	})
}

func (s *Server) page(h func(w http.ResponseWriter, r *http.Request, p principal)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var p principal
		if c, err := r.Cookie(cookieName); err == nil {
			p, _ = whoIs(r.Context(), s.db.SQL, c.Value)
		}
		if p.Name == "" {
			if r.URL.Path == "/ui/events" {
				http.Error(w, "log in first", http.StatusUnauthorized)
				return
			}
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			pages.ExecuteTemplate(w, "login", map[string]string{"Error": r.URL.Query().Get("error")})
			return
		}
		h(w, r, p)
	}
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	tok := r.PostFormValue("token")
	p, err := whoIs(r.Context(), s.db.SQL, tok)
	if err != nil || p.Name == "" || tok == "" {
		http.Redirect(w, r, "/?error=unknown+token", http.StatusSeeOther)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: tok, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// jobLine is a job in the page's lists: its view and its tenant.
type jobLine struct {
	JobView
	Tenant string
}

func jobLines(rows []jobRow) []jobLine {
	out := make([]jobLine, len(rows))
	for i, j := range rows {
		out[i] = jobLine{viewOf(j), j.Tenant}
	}
	return out
}

// dashboard: queue depth and running jobs (every machine), figures per
// tenant, the running jobs and the latest ones. A tenant sees its own; an
// operator sees every tenant, with the tenant beside each job.
func (s *Server) dashboard(w http.ResponseWriter, r *http.Request, p principal) {
	ctx := r.Context()
	q, run, err := depth(ctx, s.db.SQL)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	counts, err := countsByTenant(ctx, s.db.SQL, p)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	seen := map[string]bool{}
	var verdicts []string
	for _, c := range counts {
		for v := range c.Verdicts {
			if !seen[v] {
				seen[v] = true
				verdicts = append(verdicts, v)
			}
		}
	}
	sort.Strings(verdicts)
	running, err := listJobs(ctx, s.db.SQL, p, StateRunning, 100)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	latest, err := listJobs(ctx, s.db.SQL, p, "", 50)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	pages.ExecuteTemplate(w, "dashboard", map[string]any{
		"Who": p, "Queued": q, "Running": run, "Counts": counts, "Verdicts": verdicts,
		"Jobs": jobLines(latest), "RunningJobs": jobLines(running),
	})
}

func (s *Server) jobPage(w http.ResponseWriter, r *http.Request, p principal) {
	j, ok, err := getJob(r.Context(), s.db.SQL, p, r.PathValue("id"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if !ok {
		http.Error(w, "no such job", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	pages.ExecuteTemplate(w, "job", map[string]any{"Who": p, "Job": viewOf(j), "Tenant": j.Tenant})
}

// uiEvents tells the page that something it shows changed, so that it
// fetches itself again; it compares a cheap fingerprint at each poll (of
// the tenant's jobs, or of every job for an operator).
func (s *Server) uiEvents(w http.ResponseWriter, r *http.Request, p principal) {
	ctx := r.Context()
	fl, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	if fl != nil {
		fl.Flush()
	}
	jobs := (&conds{}).visibleTo(p, "tenant")
	last := ""
	t := time.NewTicker(s.cfg.Poll)
	defer t.Stop()
	for {
		var n, started, finished int64
		var running int64
		s.db.SQL.QueryRowContext(ctx, `SELECT count(*), COALESCE(max(created_ns), 0), COALESCE(sum(CASE WHEN state = 'running' THEN 1 ELSE 0 END), 0) FROM closet_jobs`+jobs.where(), jobs.args...).Scan(&n, &started, &running)
		s.db.SQL.QueryRowContext(ctx, `SELECT COALESCE(max(finished_ns), 0) FROM closet_verdicts`+jobs.where(), jobs.args...).Scan(&finished)
		q, run, _ := depth(ctx, s.db.SQL)
		fp := time.Unix(0, finished).String() + "|" + time.Unix(0, started).String() + "|" +
			itoa(n) + "|" + itoa(running) + "|" + itoa(q) + "|" + itoa(run)
		if fp != last {
			if last != "" {
				w.Write([]byte("event: change\ndata: " + fp + "\n\n"))
				if fl != nil {
					fl.Flush()
				}
			}
			last = fp
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
