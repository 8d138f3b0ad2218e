package ui

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const testToken = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// stubAPI records what reaches the control API.
type stubAPI struct{ calls []string }

func (a *stubAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.calls = append(a.calls, r.Method+" "+r.URL.Path)
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"ok":true}`)
}

func newTestServer(t *testing.T, remote bool) (*Server, *stubAPI) {
	t.Helper()
	api := &stubAPI{}
	s, err := New(Options{API: api, Token: testToken, AllowRemote: remote})
	if err != nil {
		t.Fatal(err)
	}
	return s, api
}

type req struct {
	method, path, body string
	header             map[string]string
	cookie             string // cookie value under the server's cookie name
	host               string
}

func (s *Server) do(t *testing.T, q req) *httptest.ResponseRecorder {
	t.Helper()
	var body io.Reader
	if q.body != "" {
		body = strings.NewReader(q.body)
	}
	r := httptest.NewRequest(q.method, "http://127.0.0.1:7070"+q.path, body)
	if q.host != "" {
		r.Host = q.host
	}
	for k, v := range q.header {
		r.Header.Set(k, v)
	}
	if q.cookie != "" {
		r.AddCookie(&http.Cookie{Name: s.CookieName(), Value: q.cookie})
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	return w
}

func TestAccessIsRefusedWithoutTheToken(t *testing.T) {
	s, api := newTestServer(t, false)
	wrong := strings.Repeat("f", len(testToken))
	for _, q := range []req{
		{method: "GET", path: "/"},
		{method: "GET", path: "/static/app.js"},
		{method: "GET", path: "/api/v1/identity"},
		{method: "GET", path: "/api/v1/events"},
		{method: "POST", path: "/api/v1/sessions", body: `{}`},
		{method: "GET", path: "/api/v1/identity", header: map[string]string{TokenHeader: wrong}},
		{method: "GET", path: "/api/v1/identity", header: map[string]string{"Authorization": "Bearer " + wrong}},
		{method: "GET", path: "/api/v1/identity", cookie: wrong},
		{method: "GET", path: "/api/v1/identity", cookie: testToken[:10]},
		{method: "GET", path: "/login?token=" + wrong},
		{method: "GET", path: "/login"},
	} {
		w := s.do(t, q)
		if w.Code != http.StatusUnauthorized {
			t.Errorf("%s %s: status %d, want 401", q.method, q.path, w.Code)
		}
		if b := w.Body.String(); !strings.Contains(b, `"kind":"unauthorized"`) || strings.Contains(b, "<html") {
			t.Errorf("%s %s: body %q, want a JSON 401 and nothing else", q.method, q.path, b)
		}
		if len(w.Result().Cookies()) != 0 {
			t.Errorf("%s %s: set a cookie without the token", q.method, q.path)
		}
	}
	if len(api.calls) != 0 {
		t.Fatalf("requests without the token reached the API: %v", api.calls)
	}
}

func TestLoginSetsAStrictHttpOnlyCookie(t *testing.T) {
	s, _ := newTestServer(t, false)
	w := s.do(t, req{method: "GET", path: "/login?token=" + testToken})
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/#inbox" {
		t.Fatalf("login: %d to %q", w.Code, w.Header().Get("Location"))
	}
	cs := w.Result().Cookies()
	if len(cs) != 1 || cs[0].Name != s.CookieName() || cs[0].Value != testToken || !cs[0].HttpOnly || cs[0].SameSite != http.SameSiteStrictMode || cs[0].Path != "/" {
		t.Fatalf("cookie %+v", cs)
	}
	w = s.do(t, req{method: "GET", path: "/", cookie: testToken})
	if w.Code != 200 || !strings.Contains(w.Body.String(), `<meta name="csrf" content="`+s.CSRFToken()+`">`) {
		t.Fatalf("index: %d %s", w.Code, w.Body.String())
	}
	if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Fatalf("CSP %q", csp)
	}
	if w := s.do(t, req{method: "GET", path: "/static/app.js", cookie: testToken}); w.Code != 200 || !strings.Contains(w.Body.String(), "EventSource") {
		t.Fatalf("app.js: %d", w.Code)
	}
	if w := s.do(t, req{method: "POST", path: "/login?token=" + testToken}); w.Code != http.StatusMethodNotAllowed {
		t.Fatalf("POST /login: %d", w.Code)
	}
}

func TestCookieNamesDifferPerToken(t *testing.T) {
	s1, _ := newTestServer(t, false)
	s2, err := New(Options{API: &stubAPI{}, Token: strings.Repeat("9", 64)})
	if err != nil {
		t.Fatal(err)
	}
	if s1.CookieName() == s2.CookieName() || s1.CSRFToken() == s2.CSRFToken() {
		t.Fatal("two nodes on one host would share a cookie name or CSRF token")
	}
}

func TestStateChangesNeedCSRFWithTheCookie(t *testing.T) {
	s, api := newTestServer(t, false)
	json := map[string]string{"Content-Type": "application/json"}
	withCSRF := map[string]string{"Content-Type": "application/json", CSRFHeader: s.CSRFToken()}
	refused := []req{
		{method: "POST", path: "/api/v1/send", body: `{}`, cookie: testToken, header: json},
		{method: "POST", path: "/api/v1/send", body: `{}`, cookie: testToken, header: map[string]string{CSRFHeader: "nope"}},
		{method: "POST", path: "/api/v1/send", body: `{}`, cookie: testToken, header: map[string]string{CSRFHeader: s.CSRFToken(), "Content-Type": "text/plain"}},
		{method: "PUT", path: "/api/v1/sessions", body: `{}`, cookie: testToken, header: withCSRF},
		{method: "DELETE", path: "/api/v1/sessions/x", cookie: testToken, header: withCSRF},
	}
	for _, q := range refused {
		w := s.do(t, q)
		if w.Code < 400 || w.Code >= 500 || !strings.Contains(w.Body.String(), `"error"`) {
			t.Errorf("%s %s %v: %d %s, want a 4xx with a message", q.method, q.path, q.header, w.Code, w.Body.String())
		}
	}
	if len(api.calls) != 0 {
		t.Fatalf("refused requests reached the API: %v", api.calls)
	}
	for _, q := range []req{
		{method: "POST", path: "/api/v1/send", body: `{}`, cookie: testToken, header: withCSRF},
		{method: "POST", path: "/api/v1/send", body: `{}`, header: map[string]string{TokenHeader: testToken}},
		{method: "POST", path: "/api/v1/ping", body: `{}`, header: map[string]string{"Authorization": "Bearer " + testToken, "Content-Type": "application/json"}},
		{method: "GET", path: "/api/v1/sessions", cookie: testToken},
	} {
		if w := s.do(t, q); w.Code != 200 {
			t.Errorf("%s %s: %d %s", q.method, q.path, w.Code, w.Body.String())
		}
	}
	want := []string{"POST /v1/send", "POST /v1/send", "POST /v1/ping", "GET /v1/sessions"}
	if strings.Join(api.calls, ",") != strings.Join(want, ",") {
		t.Fatalf("API saw %v, want %v (mounted under /api)", api.calls, want)
	}
}

func TestCrossOriginAndForeignHostsAreRefused(t *testing.T) {
	s, api := newTestServer(t, false)
	tok := map[string]string{TokenHeader: testToken}
	with := func(k, v string) map[string]string { return map[string]string{TokenHeader: testToken, k: v} }
	for _, q := range []req{
		{method: "GET", path: "/api/v1/identity", header: with("Origin", "http://evil.example")},
		{method: "POST", path: "/api/v1/send", body: `{}`, header: with("Origin", "http://127.0.0.1:9999")},
		{method: "POST", path: "/api/v1/send", body: `{}`, header: with("Origin", "null")},
		{method: "POST", path: "/api/v1/send", body: `{}`, cookie: testToken, header: with("Sec-Fetch-Site", "cross-site")},
		{method: "GET", path: "/", cookie: testToken, header: map[string]string{"Sec-Fetch-Site": "same-site"}},
		{method: "GET", path: "/login?token=" + testToken, header: map[string]string{"Sec-Fetch-Site": "cross-site"}},
		{method: "GET", path: "/api/v1/identity", header: tok, host: "evil.example:7070"},
		{method: "GET", path: "/api/v1/identity", header: tok, host: "192.168.1.5:7070"},
	} {
		w := s.do(t, q)
		if w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), `"kind":"forbidden"`) {
			t.Errorf("%s %s %v host %q: %d %s, want 403", q.method, q.path, q.header, q.host, w.Code, w.Body.String())
		}
	}
	if len(api.calls) != 0 {
		t.Fatalf("refused requests reached the API: %v", api.calls)
	}
	for _, q := range []req{
		{method: "GET", path: "/api/v1/identity", header: with("Origin", "http://127.0.0.1:7070")},
		{method: "GET", path: "/api/v1/identity", header: with("Sec-Fetch-Site", "same-origin")},
		{method: "GET", path: "/api/v1/identity", header: tok, host: "localhost:7070"},
		{method: "GET", path: "/api/v1/identity", header: tok, host: "[::1]:7070"},
	} {
		if w := s.do(t, q); w.Code != 200 {
			t.Errorf("%v host %q: %d %s", q.header, q.host, w.Code, w.Body.String())
		}
	}
	remote, _ := newTestServer(t, true)
	if w := remote.do(t, req{method: "GET", path: "/api/v1/identity", header: tok, host: "192.168.1.5:7070"}); w.Code != 200 {
		t.Fatalf("AllowRemote: %d", w.Code)
	}
}

func TestUnknownPagesAre404(t *testing.T) {
	s, _ := newTestServer(t, false)
	for _, p := range []string{"/nope", "/static/index.html", "/static/missing.js"} {
		if w := s.do(t, req{method: "GET", path: p, cookie: testToken}); w.Code != 404 {
			t.Errorf("%s: %d", p, w.Code)
		}
	}
}

func TestCheckListenAddr(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:7070": true, "127.0.0.1:0": true, "[::1]:7070": true, "localhost:7070": true,
		"0.0.0.0:7070": false, ":7070": false, "192.168.1.5:7070": false, "[::]:7070": false, "7070": false, "example.com:80": false,
	} {
		if err := CheckListenAddr(addr, false); (err == nil) != ok {
			t.Errorf("CheckListenAddr(%q) = %v, want ok %v", addr, err, ok)
		}
	}
	if err := CheckListenAddr("0.0.0.0:7070", true); err != nil {
		t.Errorf("allow remote: %v", err)
	}
}

func TestNewRefusesWeakOptions(t *testing.T) {
	if _, err := New(Options{API: &stubAPI{}, Token: "short"}); err == nil {
		t.Error("a short token was accepted")
	}
	if _, err := New(Options{Token: testToken}); err == nil {
		t.Error("no API was accepted")
	}
}

func TestTokenFile(t *testing.T) {
	tok, err := NewToken()
	if err != nil || len(tok) != 64 {
		t.Fatalf("token %q %v", tok, err)
	}
	if tok2, _ := NewToken(); tok2 == tok {
		t.Fatal("two tokens are equal")
	}
	path := filepath.Join(t.TempDir(), TokenFileName)
	if err := WriteTokenFile(path, tok); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %v %v", st.Mode(), err)
	}
	data, _ := os.ReadFile(path)
	if strings.TrimSpace(string(data)) != tok {
		t.Fatalf("file holds %q", data)
	}
	if u := LoginURL("127.0.0.1:7070", tok); u != "http://127.0.0.1:7070/login?token="+tok {
		t.Fatalf("login URL %s", u)
	}
}

func TestOneTimeLoginLinkWorksOnce(t *testing.T) {
	s, _ := newTestServer(t, false)
	link := s.LoginURL("127.0.0.1:7070")
	path := strings.TrimPrefix(link, "http://127.0.0.1:7070")
	if !strings.Contains(path, "/login?code=") || strings.Contains(link, testToken) {
		t.Fatalf("login link %s", link)
	}
	if w := s.do(t, req{method: "GET", path: "/login?code=wrong"}); w.Code != http.StatusUnauthorized {
		t.Fatalf("wrong code: %d", w.Code)
	}
	w := s.do(t, req{method: "GET", path: path})
	if w.Code != http.StatusSeeOther || len(w.Result().Cookies()) != 1 || w.Result().Cookies()[0].Value != testToken {
		t.Fatalf("first use: %d %v", w.Code, w.Result().Cookies())
	}
	if w := s.do(t, req{method: "GET", path: path}); w.Code != http.StatusUnauthorized || len(w.Result().Cookies()) != 0 {
		t.Fatalf("second use: %d, want 401", w.Code)
	}
	if w := s.do(t, req{method: "GET", path: "/login?token=" + testToken}); w.Code != http.StatusSeeOther {
		t.Fatalf("the token still logs in: %d", w.Code)
	}
}
