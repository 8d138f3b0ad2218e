package protocol_test

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

func Example() {
	scheme, _ := sign.SchemeByName("ed25519")
	alice, _ := scheme.DeriveKey([]byte("alice"))
	bob, _ := scheme.DeriveKey([]byte("bob"))
	now := int64(1_760_000_000_000) // unix ms; the caller owns the clock

	// Alice seals a direct message to Bob and writes it as one frame.
	body, _ := protocol.EncodeBody(&protocol.Direct{ContentType: "text/plain", Payload: []byte("ping me about entry 12")})
	sealed, err := protocol.Seal(alice, protocol.Message{
		Type: protocol.TypeDirect, To: bob.AgentID(), Expires: now + 30_000, Body: body,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	var stream bytes.Buffer
	_ = protocol.WriteFrame(&stream, sealed)

	// Bob reads the frame, opens it for himself and checks for replays.
	frame, _ := protocol.ReadFrame(&stream, protocol.MaxFrameBytes)
	env, err := protocol.OpenFor(frame, bob.AgentID(), now+100)
	if err != nil {
		fmt.Println(err)
		return
	}
	guard := protocol.NewReplayGuard(0, 0)
	fmt.Println(guard.Check(env, now+100))
	fmt.Println(env.Msg.From == alice.AgentID(), string(env.Body.(*protocol.Direct).Payload))

	// The same frame again is a replay; a changed byte breaks the signature.
	env2, _ := protocol.OpenFor(frame, bob.AgentID(), now+200)
	fmt.Println(errors.Is(guard.Check(env2, now+200), protocol.ErrReplay))
	frame[len(frame)-1] ^= 1
	_, err = protocol.Open(frame, now+200)
	fmt.Println(errors.Is(err, protocol.ErrBadSignature))
	// Output:
	// <nil>
	// true ping me about entry 12
	// true
	// true
}
