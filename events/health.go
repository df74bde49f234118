package events

import (
	"net/http"
	"strings"
)

var (
	okBody       = []byte("ok\n")
	drainingBody = []byte("shutting down\n")
)

// isHealthCheck tells the requests answered by health: GET and HEAD on the
// health paths, and Kubernetes' and Knative's probes on any path. Other
// methods on the health paths are events like on any other path.
func isHealthCheck(r *http.Request) bool {
	if isProbe(r) {
		return true
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	p := r.URL.Path
	return p == "/healthz" || p == "/health/readiness" || p == "/health/liveness"
}

// isProbe tells Kubernetes' and Knative's probes (knative.dev/networking's
// header.IsProbe): they are answered like readiness and not counted.
func isProbe(r *http.Request) bool {
	if ua := r.Header["User-Agent"]; len(ua) > 0 && strings.HasPrefix(ua[0], "kube-probe/") {
		return true
	}
	kp := r.Header["K-Network-Probe"]
	return len(kp) > 0 && kp[0] != ""
}

// health answers a health check: 200 "ok", or 503 once draining except
// for liveness.
func (s *Server) health(w http.ResponseWriter, r *http.Request, c *call) {
	h := w.Header()
	h["Server-Timing"] = []string{c.serverTiming()}
	h["Content-Type"] = textPlain
	body, code := okBody, http.StatusOK
	if s.draining.Load() && r.URL.Path != "/health/liveness" {
		body, code = drainingBody, http.StatusServiceUnavailable
	}
	w.WriteHeader(code)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}
