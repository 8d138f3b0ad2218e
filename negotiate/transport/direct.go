package transport

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// ContentTypePing is the content type of a liveness probe: answered at
// once, never kept in the inbox, never shown to the DirectHandler.
const ContentTypePing = "negotiate/ping"

// ContentTypeRecords asks for the countersigned records the receiver's
// chain holds that name the sender (rollback recovery: `negotiate chain
// recover`). It is answered by the records handler (SetRecordsHandler),
// never kept in the inbox nor shown to the DirectHandler; without one it
// is refused.
const ContentTypeRecords = "negotiate/records"

// DirectHandler answers a verified direct message from agent from. A nil
// reply refuses the message. It runs with a deadline (ctx) and must not
// keep d after returning.
type DirectHandler func(ctx context.Context, from sign.AgentID, d *protocol.Direct) *protocol.DirectReply

// Reply is the receiver's answer to an accepted direct message.
type Reply struct {
	// From is the agent that answered (the one asked).
	From sign.AgentID `json:"from"`
	// Payload is the answer's content; the default handler answers
	// "ack from <agent-id>".
	Payload []byte `json:"payload,omitempty"`
	// ReceivedAt is the receiver's clock when it accepted the message.
	ReceivedAt time.Time `json:"received_at"`
	// RoundTrip is the time from sending to receiving the answer.
	RoundTrip time.Duration `json:"round_trip"`
}

// RefusedError is returned by Request when the receiver refused the
// message; errors.Is(err, ErrRefused) holds.
type RefusedError struct {
	// Agent is the agent that refused.
	Agent sign.AgentID
	// Reason is the receiver's reason.
	Reason string
}

// Error describes the refusal.
func (e *RefusedError) Error() string {
	return fmt.Sprintf("negotiate: %s refused the message: %s", e.Agent.Short(), e.Reason)
}

// Is makes errors.Is(err, ErrRefused) true.
func (e *RefusedError) Is(target error) bool { return target == ErrRefused }

// SetRecordsHandler sets the answerer of ContentTypeRecords requests (the
// node, which holds the chain); nil refuses them.
func (h *Host) SetRecordsHandler(fn DirectHandler) {
	h.mu.Lock()
	h.recordsFn = fn
	h.mu.Unlock()
}

// SetDirectHandler sets the application's answerer of direct messages.
// Nil restores the default: accept, keep the message in the inbox and
// answer "ack from <agent-id>".
func (h *Host) SetDirectHandler(fn DirectHandler) {
	h.mu.Lock()
	h.direct = fn
	h.mu.Unlock()
}

// Request sends a direct message to agent to and waits for its answer. It
// returns the reply, or an error wrapping ErrRefused (a *RefusedError with
// the receiver's reason), ErrAgentNotFound, ErrUnreachable or ErrTimeout.
// Without a deadline on ctx it gives up after DefaultRequestTimeout.
func (h *Host) Request(ctx context.Context, to sign.AgentID, contentType string, payload []byte) (*Reply, error) {
	if len(contentType) > MaxContentTypeBytes {
		return nil, fmt.Errorf("negotiate: request to %s: content type is %d bytes, the limit is %d", to.Short(), len(contentType), MaxContentTypeBytes)
	}
	if len(payload) > protocol.MaxDirectBytes {
		return nil, fmt.Errorf("negotiate: request to %s: payload is %d bytes, the limit is %d: %w", to.Short(), len(payload), protocol.MaxDirectBytes, protocol.ErrTooLarge)
	}
	if _, err := sign.ParseAgentID(string(to)); err != nil {
		return nil, fmt.Errorf("negotiate: request: %w", err)
	}
	ctx, cancel := h.hostCtx(ctx, DefaultRequestTimeout)
	defer cancel()
	start := time.Now()
	pid, err := h.hostConnect(ctx, to)
	if err != nil {
		return nil, fmt.Errorf("negotiate: request to %s: %w", to.Short(), err)
	}
	body, err := protocol.EncodeBody(&protocol.Direct{ContentType: contentType, Payload: payload})
	if err != nil {
		return nil, fmt.Errorf("negotiate: request to %s: %w", to.Short(), err)
	}
	frame, err := protocol.Seal(h.key, protocol.Message{
		Type:    protocol.TypeDirect,
		To:      to,
		Expires: h.now().Add(hostMessageLifetime).UnixMilli(),
		Body:    body,
		Intro:   h.IntroRecords(nil),
	})
	if err != nil {
		return nil, fmt.Errorf("negotiate: request to %s: %w", to.Short(), err)
	}
	env, err := h.hostExchange(ctx, pid, frame)
	if err != nil {
		return nil, fmt.Errorf("negotiate: request to %s: %w", to.Short(), hostDeadlineError(ctx, err))
	}
	if env.Msg.From != to || env.Msg.Type != protocol.TypeDirectReply {
		return nil, fmt.Errorf("negotiate: request to %s: answer is a %q from %s: %w", to.Short(), env.Msg.Type, env.Msg.From.Short(), protocol.ErrMalformed)
	}
	r, ok := env.Body.(*protocol.DirectReply)
	if !ok {
		return nil, fmt.Errorf("negotiate: request to %s: answer body is %T: %w", to.Short(), env.Body, protocol.ErrMalformed)
	}
	if !r.Accepted {
		return nil, &RefusedError{Agent: to, Reason: r.Reason}
	}
	return &Reply{From: to, Payload: r.Payload, ReceivedAt: time.UnixMilli(r.ReceivedAt), RoundTrip: time.Since(start)}, nil
}

// Ping sends a ContentTypePing message and returns the round-trip time.
func (h *Host) Ping(ctx context.Context, to sign.AgentID) (time.Duration, error) {
	r, err := h.Request(ctx, to, ContentTypePing, nil)
	if err != nil {
		return 0, err
	}
	return r.RoundTrip, nil
}

// hostExchange writes one frame on a new direct stream and reads and
// opens the answer.
func (h *Host) hostExchange(ctx context.Context, pid peer.ID, frame []byte) (*protocol.Envelope, error) {
	s, err := h.h.NewStream(ctx, pid, protocol.ProtocolMsg)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: open stream: %w", ErrUnreachable, err)
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { s.Reset() })
	defer stop()
	if d, ok := ctx.Deadline(); ok {
		s.SetDeadline(d)
	}
	if err := protocol.WriteFrame(s, frame); err != nil {
		s.Reset()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	// The receiver may answer and close before our half-close arrives
	// (a QUIC close stops our sending side): the answer is what counts.
	_ = s.CloseWrite()
	answer, err := protocol.ReadFrame(s, protocol.MaxFrameBytes)
	if err != nil {
		s.Reset()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
			return nil, context.DeadlineExceeded
		}
		return nil, fmt.Errorf("%w: no answer (the receiver or the connection closed the stream): %w", ErrUnreachable, err)
	}
	env, err := protocol.OpenFor(answer, h.self, h.now().UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("answer: %w", err)
	}
	return env, nil
}

// hostHandleDirect serves one inbound direct stream: one request, one
// answer. Frames that cannot be opened reset the stream; opened ones that
// are refused get a signed refusal with the reason.
func (h *Host) hostHandleDirect(s network.Stream) {
	remote := s.Conn().RemotePeer()
	if !h.lim.acquireStream(remote, true, time.Now()) {
		h.hostDenyStream()
		h.log.Debug("too many direct streams", "peer", remote.String())
		s.Reset()
		return
	}
	defer h.lim.releaseStream(remote, true)
	if err := s.Scope().SetService(hostServiceName); err != nil {
		h.log.Debug("direct stream: attach service", "peer", remote.String(), "err", err)
		s.Reset()
		return
	}
	if err := s.Scope().ReserveMemory(protocol.MaxFrameBytes, network.ReservationPriorityAlways); err != nil {
		h.hostDenyStream()
		h.log.Debug("direct stream: reserve memory", "peer", remote.String(), "err", err)
		s.Reset()
		return
	}
	defer s.Scope().ReleaseMemory(protocol.MaxFrameBytes)
	s.SetDeadline(time.Now().Add(hostDirectStreamTimeout))

	frame, err := protocol.ReadFrame(s, protocol.MaxFrameBytes)
	if err != nil {
		h.hostRefuseFraming(remote, protocol.ProtocolMsg, err)
		s.Reset()
		return
	}
	if !h.lim.allowFrame(remote, time.Now()) {
		h.hostRateLimited()
		h.log.Debug("direct frame over rate limit", "peer", remote.String())
		s.Reset()
		return
	}
	nowMs := h.now().UnixMilli()
	env, err := protocol.OpenFor(frame, h.self, nowMs)
	if err != nil {
		h.hostRefuse(remote, protocol.ProtocolMsg, err)
		s.Reset()
		return
	}
	from := env.Msg.From
	refuse := func(err error) {
		h.hostRefuse(remote, protocol.ProtocolMsg, err)
		h.hostAnswer(s, from, &protocol.DirectReply{Accepted: false, Reason: err.Error(), ReceivedAt: nowMs})
	}
	if env.Msg.Type != protocol.TypeDirect {
		refuse(fmt.Errorf("%w: a %q message on the direct-message protocol", protocol.ErrUnknownType, env.Msg.Type))
		return
	}
	if err := h.hostAcceptIntro(from, env.Msg.Intro); err != nil {
		refuse(err)
		return
	}
	if err := h.hostCheckSender(from, remote); err != nil {
		refuse(err)
		return
	}
	if err := h.guard.Load().Check(env, nowMs); err != nil {
		refuse(err)
		return
	}
	d, ok := env.Body.(*protocol.Direct)
	if !ok {
		refuse(fmt.Errorf("%w: direct body is %T", protocol.ErrMalformed, env.Body))
		return
	}
	h.stats.framesIn.Add(1)
	received := h.now()
	reply := h.hostAnswerDirect(from, d, env.Msg.Nonce, received)
	if reply == nil {
		reply = &protocol.DirectReply{Accepted: false, Reason: "the receiver gave no answer"}
	}
	reply.ReceivedAt = received.UnixMilli()
	h.hostAnswer(s, from, reply)
}

// hostAnswerDirect decides the answer to an accepted direct message.
func (h *Host) hostAnswerDirect(from sign.AgentID, d *protocol.Direct, nonce []byte, received time.Time) (reply *protocol.DirectReply) {
	if d.ContentType == ContentTypePing {
		return &protocol.DirectReply{Accepted: true, Payload: []byte("pong")}
	}
	h.mu.Lock()
	fn := h.direct
	if d.ContentType == ContentTypeRecords {
		fn = h.recordsFn
		if fn == nil {
			h.mu.Unlock()
			return &protocol.DirectReply{Accepted: false, Reason: "this agent serves no records"}
		}
	}
	h.mu.Unlock()
	if fn == nil {
		h.inbox.add(InboxItem{From: from, ContentType: d.ContentType, Payload: d.Payload, ReceivedAt: received, Nonce: nonce})
		return &protocol.DirectReply{Accepted: true, Payload: []byte("ack from " + string(h.self))}
	}
	ctx, cancel := context.WithTimeout(h.ctx, hostDirectHandlerTimeout)
	defer cancel()
	defer func() {
		if p := recover(); p != nil {
			h.log.Error("direct handler panicked", "from", from.Short(), "panic", p)
			reply = &protocol.DirectReply{Accepted: false, Reason: "the receiver failed to handle the message"}
		}
	}()
	return fn(ctx, from, d)
}

// hostAnswer seals and writes a reply to from, then closes the stream.
func (h *Host) hostAnswer(s network.Stream, to sign.AgentID, r *protocol.DirectReply) {
	if len(r.Reason) > protocol.MaxReasonBytes {
		r.Reason = strings.ToValidUTF8(r.Reason[:protocol.MaxReasonBytes], "")
	}
	body, err := protocol.EncodeBody(r)
	if err == nil {
		var frame []byte
		frame, err = protocol.Seal(h.key, protocol.Message{
			Type:    protocol.TypeDirectReply,
			To:      to,
			Expires: h.now().Add(hostMessageLifetime).UnixMilli(),
			Body:    body,
		})
		if err == nil {
			err = protocol.WriteFrame(s, frame)
		}
	}
	if err != nil {
		if !errors.Is(err, network.ErrReset) {
			h.log.Debug("direct answer not sent", "to", to.Short(), "err", err)
		}
		s.Reset()
		return
	}
	s.Close()
}
