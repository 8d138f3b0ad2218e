package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/negotiate-dev/negotiate/sign"
)

// Limits and timeouts of the server.
const (
	// MaxRequestBytes bounds a request body: above the largest direct
	// message (256 KiB) once base64/JSON-escaped, small enough for memory.
	MaxRequestBytes = 1 << 20
	// DefaultTimeout is used for ping/send when the request names none.
	DefaultTimeout = 10 * time.Second
	// MaxTimeout bounds any timeout a request asks for, so a forgotten
	// request cannot hold a handler forever.
	MaxTimeout = 5 * time.Minute
	// readHeaderTimeout bounds a slow client sending its headers.
	readHeaderTimeout = 5 * time.Second
	// shutdownTimeout bounds waiting for in-flight requests at shutdown.
	shutdownTimeout = 5 * time.Second
	// probeTimeout bounds checking whether a socket already has a live server.
	probeTimeout = time.Second
	// socketMode keeps the socket to the home's owner.
	socketMode = 0o600
)

// Node is what a running node exposes to the control API. The node may also
// implement Messenger; its routes are then registered too.
type Node interface {
	// Identity returns the agent ID, key, peer ID and listen addresses.
	Identity(ctx context.Context) (Identity, error)
}

// Messenger is the direct-messaging part of a node.
type Messenger interface {
	// Peers lists connected peers and known agents.
	Peers(ctx context.Context) (Peers, error)
	// Ping makes one round trip to the agent; ctx carries the timeout.
	Ping(ctx context.Context, to sign.AgentID) (PingResult, error)
	// Send sends a direct message and waits for the reply; ctx carries the timeout.
	// A refusal is either SendResult.Accepted false or an error of KindRefused.
	Send(ctx context.Context, req SendRequest) (SendResult, error)
	// Inbox lists the direct messages received, oldest first.
	Inbox(ctx context.Context) ([]InboxMessage, error)
}

// Options configure a Server. The zero value serves identity and health only.
type Options struct {
	// Chain serves the /v1/chain routes; nil leaves them unregistered.
	Chain ChainReader
	// Classify maps an error a handler returned to a wire Kind when it is
	// neither an *Error nor one of this package's sentinels. "" = internal.
	Classify func(error) Kind
	// Logger logs failed requests; nil = slog.Default().
	Logger *slog.Logger
	// Events serves GET /v1/events (server-sent events) from this hub;
	// nil leaves the route unregistered.
	Events *EventHub
}

// HandlerFunc handles one request. The value it returns is sent as JSON
// (200), unless it is a *Stream; an error is sent as {"error","kind"}.
type HandlerFunc func(ctx context.Context, r *Request) (any, error)

// Stream is a handler result written raw (e.g. a chain export) instead of
// JSON. An error from Write after the first byte reaches the client in the
// trailer StreamErrorTrailer.
type Stream struct {
	ContentType string
	// Flush sends every Write to the client at once (event streams).
	Flush bool
	Write func(w io.Writer) error
}

// StreamErrorTrailer is the HTTP trailer carrying a Stream's late error.
const StreamErrorTrailer = "X-Negotiate-Error"

// Request is one control request.
type Request struct {
	HTTP *http.Request
}

// Decode reads the JSON body into v. Unknown fields, trailing data and
// bodies over MaxRequestBytes are bad requests.
func (r *Request) Decode(v any) error {
	dec := json.NewDecoder(io.LimitReader(r.HTTP.Body, MaxRequestBytes+1))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return Errorf(KindBadRequest, "malformed request body: %v", err)
	}
	if dec.More() {
		return Errorf(KindBadRequest, "malformed request body: data after the JSON value")
	}
	if dec.InputOffset() > MaxRequestBytes {
		return Errorf(KindBadRequest, "request body over %d bytes", MaxRequestBytes)
	}
	return nil
}

// Query returns a query parameter ("" if absent).
func (r *Request) Query(name string) string { return r.HTTP.URL.Query().Get(name) }

// Uint parses an unsigned query parameter, def when absent.
func (r *Request) Uint(name string, def uint64) (uint64, error) {
	s := r.Query(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, Errorf(KindBadRequest, "query parameter %s=%q is not an unsigned integer", name, s)
	}
	return n, nil
}

// Route is one registered route.
type Route struct {
	Method string `json:"method"`
	Path   string `json:"path"`
}

// Server is the control API router and server.
type Server struct {
	mux    *http.ServeMux
	opts   Options
	log    *slog.Logger
	mu     sync.Mutex
	routes []Route
}

// NewServer builds a server for node and registers the built-in routes:
//
//	GET  /v1/health, /v1/routes, /v1/identity
//	GET  /v1/chain/status, /v1/chain/entries?from=N&limit=N, /v1/chain/verify, /v1/chain/export?format=json|cbor   (with Options.Chain)
//	GET  /v1/chain/records?before=N&limit=N&q=TEXT   (with Options.Chain, newest first)
//	GET  /v1/peers, /v1/inbox; POST /v1/ping, /v1/send   (when node implements Messenger)
//	GET  /v1/events (server-sent events), /v1/events/recent?session=ID   (with Options.Events)
func NewServer(node Node, opts Options) *Server {
	s := &Server{mux: http.NewServeMux(), opts: opts, log: opts.Logger}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, Errorf(KindNotFound, "no control route %s %s (this node may be older than the client)", r.Method, r.URL.Path))
	})
	s.Handle("GET", "/v1/health", func(ctx context.Context, r *Request) (any, error) {
		return map[string]any{"ok": true, "pid": os.Getpid()}, nil
	})
	s.Handle("GET", "/v1/routes", func(ctx context.Context, r *Request) (any, error) {
		return s.Routes(), nil
	})
	s.Handle("GET", "/v1/identity", func(ctx context.Context, r *Request) (any, error) {
		return node.Identity(ctx)
	})
	if c := opts.Chain; c != nil {
		s.registerChain(c)
	}
	if m, ok := node.(Messenger); ok {
		s.registerMessenger(m)
	}
	if opts.Events != nil {
		s.registerEvents(opts.Events)
	}
	return s
}

func (s *Server) registerChain(c ChainReader) {
	s.registerRecords(c)
	s.Handle("GET", "/v1/chain/status", func(ctx context.Context, r *Request) (any, error) {
		return c.ChainStatus(ctx)
	})
	s.Handle("GET", "/v1/chain/entries", func(ctx context.Context, r *Request) (any, error) {
		from, err := r.Uint("from", 0)
		if err != nil {
			return nil, err
		}
		limit, err := r.Uint("limit", 0)
		if err != nil {
			return nil, err
		}
		return c.ChainEntries(ctx, from, limit)
	})
	s.Handle("GET", "/v1/chain/verify", func(ctx context.Context, r *Request) (any, error) {
		return c.ChainVerify(ctx)
	})
	s.Handle("GET", "/v1/chain/backup", func(ctx context.Context, r *Request) (any, error) {
		return &Stream{ContentType: "application/octet-stream", Write: func(w io.Writer) error {
			return c.ChainBackup(ctx, w)
		}}, nil
	})
	s.Handle("GET", "/v1/chain/export", func(ctx context.Context, r *Request) (any, error) {
		format := r.Query("format")
		if format == "" {
			format = FormatJSON
		}
		ct := "application/json"
		switch format {
		case FormatJSON:
		case FormatCBOR:
			ct = "application/cbor"
		default:
			return nil, Errorf(KindBadRequest, "unknown export format %q: use %s or %s", format, FormatJSON, FormatCBOR)
		}
		return &Stream{ContentType: ct, Write: func(w io.Writer) error { return c.ChainExport(ctx, format, w) }}, nil
	})
}

// requestTimeout turns a request's timeout_ms into a duration.
func requestTimeout(ms int64) (time.Duration, error) {
	if ms < 0 {
		return 0, Errorf(KindBadRequest, "timeout_ms %d is negative", ms)
	}
	if ms == 0 {
		return DefaultTimeout, nil
	}
	d := time.Duration(ms) * time.Millisecond
	if d > MaxTimeout {
		return 0, Errorf(KindBadRequest, "timeout %s is over the maximum %s", d, MaxTimeout)
	}
	return d, nil
}

func parseAgent(text string) (sign.AgentID, error) {
	id, err := sign.ParseAgentID(text)
	if err != nil {
		return "", Errorf(KindBadRequest, "%v", err)
	}
	return id, nil
}

func (s *Server) registerMessenger(m Messenger) {
	s.Handle("GET", "/v1/peers", func(ctx context.Context, r *Request) (any, error) {
		return m.Peers(ctx)
	})
	s.Handle("GET", "/v1/inbox", func(ctx context.Context, r *Request) (any, error) {
		msgs, err := m.Inbox(ctx)
		if msgs == nil && err == nil {
			msgs = []InboxMessage{}
		}
		return msgs, err
	})
	s.Handle("POST", "/v1/ping", func(ctx context.Context, r *Request) (any, error) {
		var req PingRequest
		if err := r.Decode(&req); err != nil {
			return nil, err
		}
		to, err := parseAgent(string(req.To))
		if err != nil {
			return nil, err
		}
		d, err := requestTimeout(req.TimeoutMS)
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		return m.Ping(ctx, to)
	})
	s.Handle("POST", "/v1/send", func(ctx context.Context, r *Request) (any, error) {
		var req SendRequest
		if err := r.Decode(&req); err != nil {
			return nil, err
		}
		to, err := parseAgent(string(req.To))
		if err != nil {
			return nil, err
		}
		req.To = to
		d, err := requestTimeout(req.TimeoutMS)
		if err != nil {
			return nil, err
		}
		if req.ContentType == "" {
			req.ContentType = "text/plain"
		}
		ctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		return m.Send(ctx, req)
	})
}

// Handle registers h for method and path (e.g. "POST", "/v1/sessions").
// Paths may hold Go 1.22 ServeMux wildcards ("/v1/sessions/{id}"), read
// with r.HTTP.PathValue. Registering the same method and path twice is a
// programming error and panics, as with net/http.
func (s *Server) Handle(method, path string, h HandlerFunc) {
	method = strings.ToUpper(method)
	s.mux.HandleFunc(method+" "+path, func(w http.ResponseWriter, hr *http.Request) {
		s.serve(w, hr, h)
	})
	s.mu.Lock()
	s.routes = append(s.routes, Route{Method: method, Path: path})
	s.mu.Unlock()
}

// Routes lists the registered routes, sorted by path then method.
func (s *Server) Routes() []Route {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := append([]Route(nil), s.routes...)
	sort.Slice(out, func(i, j int) bool {
		if out[i].Path != out[j].Path {
			return out[i].Path < out[j].Path
		}
		return out[i].Method < out[j].Method
	})
	return out
}

// ServeHTTP makes the server usable with any listener (and httptest).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

func (s *Server) serve(w http.ResponseWriter, hr *http.Request, h HandlerFunc) {
	hr.Body = http.MaxBytesReader(w, hr.Body, MaxRequestBytes+1)
	v, err := h(hr.Context(), &Request{HTTP: hr})
	if err != nil {
		s.writeError(w, hr, err)
		return
	}
	if st, ok := v.(*Stream); ok {
		w.Header().Set("Content-Type", st.ContentType)
		w.Header().Set("Trailer", StreamErrorTrailer)
		var out io.Writer = w
		if st.Flush {
			w.Header().Set("Cache-Control", "no-store")
			out = &flushWriter{w: w, rc: http.NewResponseController(w)}
		}
		w.WriteHeader(http.StatusOK)
		if st.Flush {
			http.NewResponseController(w).Flush()
		}
		if err := st.Write(out); err != nil {
			s.log.Warn("control: stream failed", "path", hr.URL.Path, "err", err)
			w.Header().Set(StreamErrorTrailer, oneLine(err.Error()))
		}
		return
	}
	if v == nil {
		v = map[string]bool{"ok": true}
	}
	data, err := json.Marshal(v)
	if err != nil {
		s.writeError(w, hr, fmt.Errorf("control: encode answer: %w", err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.Write(append(data, '\n'))
}

// flushWriter sends each write to the client at once.
type flushWriter struct {
	w  io.Writer
	rc *http.ResponseController
}

func (f *flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err != nil {
		return n, err
	}
	return n, f.rc.Flush()
}

func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

func (s *Server) writeError(w http.ResponseWriter, hr *http.Request, err error) {
	k := kindOf(err, s.opts.Classify)
	if k == KindInternal {
		s.log.Warn("control: request failed", "method", hr.Method, "path", hr.URL.Path, "err", err)
	}
	data, _ := json.Marshal(Error{Kind: k, Message: err.Error()})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(statusOf(k))
	w.Write(append(data, '\n'))
}

// Listen creates the unix socket at path with mode 0600. A stale socket
// left by a crashed node is removed; a socket with a live server is
// ErrNodeRunning.
func Listen(path string) (net.Listener, error) {
	if _, err := os.Lstat(path); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
		err := NewClient(path).Health(ctx)
		cancel()
		if err == nil {
			return nil, fmt.Errorf("%w on %s: stop it first", ErrNodeRunning, path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("control: remove stale socket %s: %w", path, err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control: listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, socketMode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control: chmod socket %s: %w", path, err)
	}
	return ln, nil
}

// Serve answers requests on ln until ctx is done, then stops accepting,
// waits up to 5 s for requests in flight (their contexts are cancelled) and
// closes ln (which removes a unix socket).
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	return ServeUntilDone(ctx, ln, s, slog.NewLogLogger(s.log.Handler(), slog.LevelWarn), "control")
}

// ServeUntilDone serves h on ln until ctx is done, then stops accepting and
// waits up to 5 s for requests in flight (their contexts, derived from ctx,
// are cancelled); ln is closed. Server errors go to errLog; what names the
// server in returned errors. The node's dashboard serves through it too.
func ServeUntilDone(ctx context.Context, ln net.Listener, h http.Handler, errLog *log.Logger, what string) error {
	hs := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          errLog,
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("%s: serve: %w", what, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	err := hs.Shutdown(sctx)
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("%s: shutdown: %w", what, err)
	}
	return nil
}
