package ui

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/negotiate-dev/negotiate/internal/control"
)

// Limits and names of the dashboard server.
const (
	// TokenHeader carries the token for scripts and tests (no cookie, no CSRF).
	TokenHeader = "X-Negotiate-Token"
	// CSRFHeader carries the page's CSRF token on POSTs authenticated by cookie.
	CSRFHeader = "X-CSRF-Token"
	// TokenFileName is the token's file in the node's home (mode 0600).
	TokenFileName = "ui.token"
	// tokenBytes is the token's entropy: 256 bits.
	tokenBytes = 32
	// minTokenLen refuses weak tokens given in Options.
	minTokenLen = 32
	// cookieMaxAge keeps a login for a working day.
	cookieMaxAge = 12 * time.Hour
)

//go:embed assets
var assets embed.FS

// Options configure a Server.
type Options struct {
	// API is the control API handler (a *control.Server) mounted under
	// /api: /api/v1/... is the control route /v1/.... Required.
	API http.Handler
	// Token is the access token (at least 32 characters; see NewToken). Required.
	Token string
	// AllowRemote accepts requests naming any Host. False (the default)
	// accepts only loopback hosts (127.0.0.0/8, ::1, localhost), which
	// stops DNS-rebinding pages from reaching the dashboard.
	AllowRemote bool
	// Logger logs refused requests at debug level; nil = slog.Default().
	Logger *slog.Logger
}

// Server is the dashboard's HTTP handler.
type Server struct {
	opts   Options
	log    *slog.Logger
	csrf   string
	cookie string
	index  *template.Template
	static http.Handler

	mu        sync.Mutex
	loginCode string // one-time login code; "" once used
}

// New checks opts and builds the server.
func New(opts Options) (*Server, error) {
	if opts.API == nil {
		return nil, errors.New("ui: Options.API is required")
	}
	if len(opts.Token) < minTokenLen {
		return nil, fmt.Errorf("ui: token is %d characters, at least %d are required", len(opts.Token), minTokenLen)
	}
	s := &Server{opts: opts, log: opts.Logger}
	if s.log == nil {
		s.log = slog.Default()
	}
	mac := hmac.New(sha256.New, []byte(opts.Token))
	mac.Write([]byte("negotiate-ui-csrf"))
	s.csrf = hex.EncodeToString(mac.Sum(nil))
	// Browsers share cookies between ports of one host: name the cookie
	// after this token so two nodes' dashboards on 127.0.0.1 do not clash.
	id := sha256.Sum256([]byte("negotiate-ui-cookie" + opts.Token))
	s.cookie = "negotiate_ui_" + hex.EncodeToString(id[:6])
	idx, err := template.ParseFS(assets, "assets/index.html")
	if err != nil {
		return nil, fmt.Errorf("ui: parse index: %w", err)
	}
	s.index = idx
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		return nil, fmt.Errorf("ui: assets: %w", err)
	}
	s.static = http.StripPrefix("/static/", http.FileServer(http.FS(sub)))
	if s.loginCode, err = NewToken(); err != nil {
		return nil, err
	}
	return s, nil
}

// LoginURL is the URL to print at start: it logs one browser in at addr
// and works once (after that, log in with the token:
// LoginURL(addr, token) or the token header).
func (s *Server) LoginURL(addr string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return "http://" + addr + "/login?" + url.Values{"code": {s.loginCode}}.Encode()
}

// useLoginCode reports whether code is the unused one-time login code, and
// uses it up.
func (s *Server) useLoginCode(code string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.loginCode == "" || subtle.ConstantTimeCompare([]byte(code), []byte(s.loginCode)) != 1 {
		return false
	}
	s.loginCode = ""
	return true
}

// CSRFToken is the token the page sends in CSRFHeader (derived from the
// access token; tests use it to act as the page).
func (s *Server) CSRFToken() string { return s.csrf }

// CookieName is the name of the login cookie.
func (s *Server) CookieName() string { return s.cookie }

// NewToken returns a random access token (64 hex characters).
func NewToken() (string, error) {
	b := make([]byte, tokenBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("ui: generate token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// WriteTokenFile writes token to path with mode 0600 (replacing any older
// token, which stops working with the node that made it).
func WriteTokenFile(path, token string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(token+"\n"), 0o600); err != nil {
		return fmt.Errorf("ui: write token file: %w", err)
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("ui: chmod token file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("ui: write token file: %w", err)
	}
	return nil
}

// LoginURL is the URL that logs a browser in to the dashboard at addr with
// the access token (as often as needed).
func LoginURL(addr, token string) string {
	return "http://" + addr + "/login?" + url.Values{"token": {token}}.Encode()
}

// CheckListenAddr refuses a non-loopback listen address unless
// allowRemote. An empty host ("":7070) listens everywhere: remote.
func CheckListenAddr(addr string, allowRemote bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("ui: listen address %q: write host:port, e.g. 127.0.0.1:7070: %w", addr, err)
	}
	if allowRemote || isLoopbackHost(host) {
		return nil
	}
	return fmt.Errorf("ui: listen address %q is not loopback: the dashboard controls this node, so it binds to 127.0.0.1 or ::1 unless --ui-allow-remote is given", addr)
}

func isLoopbackHost(host string) bool {
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	if !s.opts.AllowRemote {
		host, _, err := net.SplitHostPort(r.Host)
		if err != nil {
			host = r.Host
		}
		if !isLoopbackHost(host) {
			s.refuse(w, r, http.StatusForbidden, "this dashboard answers only to a loopback host name (127.0.0.1, ::1 or localhost), not "+r.Host)
			return
		}
	}
	if msg := crossOrigin(r); msg != "" {
		s.refuse(w, r, http.StatusForbidden, msg)
		return
	}
	if r.URL.Path == "/login" {
		s.login(w, r)
		return
	}
	byHeader, ok := s.authenticated(r)
	if !ok {
		s.refuse(w, r, http.StatusUnauthorized, "unauthorized: open the login URL the node printed at start, or send the token from <home>/"+TokenFileName+" in the "+TokenHeader+" header")
		return
	}
	switch {
	case strings.HasPrefix(r.URL.Path, "/api/"):
		s.api(w, r, byHeader)
	case r.URL.Path == "/" || r.URL.Path == "/index.html":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			s.refuse(w, r, http.StatusMethodNotAllowed, "use GET")
			return
		}
		h.Set("Content-Type", "text/html; charset=utf-8")
		if err := s.index.Execute(w, map[string]string{"CSRF": s.csrf}); err != nil {
			s.log.Warn("ui: render index", "err", err)
		}
	case strings.HasPrefix(r.URL.Path, "/static/"):
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			s.refuse(w, r, http.StatusMethodNotAllowed, "use GET")
			return
		}
		if r.URL.Path == "/static/index.html" {
			s.refuse(w, r, http.StatusNotFound, "not found")
			return
		}
		h.Set("Cache-Control", "no-cache")
		s.static.ServeHTTP(w, r)
	default:
		s.refuse(w, r, http.StatusNotFound, "no page "+r.URL.Path)
	}
}

// crossOrigin explains why r comes from another site, or returns "".
func crossOrigin(r *http.Request) string {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return "cross-origin request refused (Sec-Fetch-Site: " + site + ")"
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || u.Scheme != "http" && u.Scheme != "https" || !strings.EqualFold(u.Host, r.Host) {
			return "cross-origin request refused (Origin: " + o + ")"
		}
	}
	return ""
}

// authenticated reports whether r carries the token, and whether in a header.
func (s *Server) authenticated(r *http.Request) (byHeader, ok bool) {
	tok := r.Header.Get(TokenHeader)
	if tok == "" {
		if a := r.Header.Get("Authorization"); strings.HasPrefix(a, "Bearer ") {
			tok = strings.TrimPrefix(a, "Bearer ")
		}
	}
	if tok != "" {
		return true, s.tokenOK(tok)
	}
	if c, err := r.Cookie(s.cookie); err == nil {
		return false, s.tokenOK(c.Value)
	}
	return false, false
}

func (s *Server) tokenOK(tok string) bool {
	return subtle.ConstantTimeCompare([]byte(tok), []byte(s.opts.Token)) == 1
}

// login sets the cookie for a valid token and sends the browser to the
// dashboard, dropping the token from the address bar.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		s.refuse(w, r, http.StatusMethodNotAllowed, "use GET")
		return
	}
	q := r.URL.Query()
	switch {
	case q.Get("token") != "" && s.tokenOK(q.Get("token")):
	case q.Get("code") != "" && s.useLoginCode(q.Get("code")):
	default:
		s.refuse(w, r, http.StatusUnauthorized, "unauthorized: this login link is wrong or was used already; log in with /login?token=<the token in <home>/"+TokenFileName+"> (a new one at every start of the node)")
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: s.cookie, Value: s.opts.Token, Path: "/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, MaxAge: int(cookieMaxAge.Seconds()),
		Secure: r.TLS != nil,
	})
	http.Redirect(w, r, "/#inbox", http.StatusSeeOther)
}

// api checks the method and CSRF token, then hands r to the control API.
func (s *Server) api(w http.ResponseWriter, r *http.Request, byHeader bool) {
	switch r.Method {
	case http.MethodGet:
	case http.MethodPost:
		if !byHeader && subtle.ConstantTimeCompare([]byte(r.Header.Get(CSRFHeader)), []byte(s.csrf)) != 1 {
			s.refuse(w, r, http.StatusForbidden, "missing or wrong CSRF token: reload the dashboard")
			return
		}
		if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
			s.refuse(w, r, http.StatusUnsupportedMediaType, "send JSON (Content-Type: application/json)")
			return
		}
	default:
		s.refuse(w, r, http.StatusMethodNotAllowed, "use GET to read and POST to act")
		return
	}
	http.StripPrefix("/api", s.opts.API).ServeHTTP(w, r)
}

// refuse answers with status and a JSON error in the control API's shape
// ({"error","kind"}), which the page shows as it shows the node's own.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, status int, msg string) {
	s.log.Debug("ui: refused", "method", r.Method, "path", r.URL.Path, "status", status, "reason", msg)
	kind := "bad_request"
	switch status {
	case http.StatusUnauthorized:
		kind = "unauthorized"
	case http.StatusForbidden:
		kind = "forbidden"
	case http.StatusNotFound:
		kind = "not_found"
	}
	data, _ := json.Marshal(map[string]string{"error": msg, "kind": kind})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(data, '\n'))
}

// Serve answers requests on ln until ctx is done, then shuts down (waiting
// up to 5 s for requests in flight; event streams end with ctx).
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	return control.ServeUntilDone(ctx, ln, s, slog.NewLogLogger(s.log.Handler(), slog.LevelDebug), "ui")
}
