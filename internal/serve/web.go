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

func (s *Server) page(h func(w http.ResponseWriter, r *http.Request, tenant string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tenant := ""
		if c, err := r.Cookie(cookieName); err == nil {
			tenant, _ = tenantOf(r.Context(), s.db.SQL, c.Value)
		}
		if tenant == "" {
			if r.URL.Path == "/ui/events" {
				http.Error(w, "log in first", http.StatusUnauthorized)
				return
			}
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			pages.ExecuteTemplate(w, "login", map[string]string{"Error": r.URL.Query().Get("error")})
			return
		}
		h(w, r, tenant)
	}
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	tok := r.PostFormValue("token")
	tenant, err := tenantOf(r.Context(), s.db.SQL, tok)
	if err != nil || tenant == "" || tok == "" {
		http.Redirect(w, r, "/?error=unknown+token", http.StatusSeeOther)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: tok, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

type countView struct {
	Verdict string
	N       int64
}

func (s *Server) dashboard(w http.ResponseWriter, r *http.Request, tenant string) {
	ctx := r.Context()
	q, run, err := depth(ctx, s.db.SQL)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	counts, err := verdictCounts(ctx, s.db.SQL, tenant)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	var cv []countView
	for v, n := range counts {
		cv = append(cv, countView{v, n})
	}
	sort.Slice(cv, func(i, j int) bool { return cv[i].Verdict < cv[j].Verdict })
	rows, err := listJobs(ctx, s.db.SQL, tenant, 50)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	var jobs, running []JobView
	for _, j := range rows {
		v := viewOf(j)
		jobs = append(jobs, v)
		if v.State == StateRunning {
			running = append(running, v)
		}
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	pages.ExecuteTemplate(w, "dashboard", map[string]any{
		"Tenant": tenant, "Queued": q, "Running": run, "Counts": cv, "Jobs": jobs, "RunningJobs": running,
	})
}

func (s *Server) jobPage(w http.ResponseWriter, r *http.Request, tenant string) {
	j, ok, err := getJob(r.Context(), s.db.SQL, tenant, r.PathValue("id"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if !ok {
		http.Error(w, "no such job", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	pages.ExecuteTemplate(w, "job", map[string]any{"Tenant": tenant, "Job": viewOf(j)})
}

// uiEvents tells the page that something of its tenant changed, so that it
// fetches itself again; it compares a cheap fingerprint at each poll.
func (s *Server) uiEvents(w http.ResponseWriter, r *http.Request, tenant string) {
	ctx := r.Context()
	fl, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	if fl != nil {
		fl.Flush()
	}
	last := ""
	t := time.NewTicker(s.cfg.Poll)
	defer t.Stop()
	for {
		var n, started, finished int64
		var running int64
		s.db.SQL.QueryRowContext(ctx, `SELECT count(*), COALESCE(max(created_ns), 0), COALESCE(sum(CASE WHEN state = 'running' THEN 1 ELSE 0 END), 0) FROM closet_jobs WHERE tenant = $1`, tenant).Scan(&n, &started, &running)
		s.db.SQL.QueryRowContext(ctx, `SELECT COALESCE(max(finished_ns), 0) FROM closet_verdicts WHERE tenant = $1`, tenant).Scan(&finished)
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
