package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/negotiate-dev/negotiate/internal/control"
	"github.com/negotiate-dev/negotiate/internal/ui"
	"github.com/negotiate-dev/negotiate/negotiate"
	"github.com/negotiate-dev/negotiate/negotiate/engine"
	"github.com/negotiate-dev/negotiate/negotiate/transport"
)

// inboxPollInterval is how often the node looks for new direct messages to
// announce on the event stream (the host keeps them without a callback).
const inboxPollInterval = 500 * time.Millisecond

// startUI serves the dashboard on addr until ctx ends: a new token in
// <home>/ui.token (0600), the control API mounted under /api. It returns
// the dashboard's URL and its login URL.
func (d *daemon) startUI(ctx context.Context, addr string, allowRemote bool) (url, login string, err error) {
	token, err := ui.NewToken()
	if err != nil {
		return "", "", err
	}
	if err := ui.WriteTokenFile(filepath.Join(d.home.dir, ui.TokenFileName), token); err != nil {
		return "", "", err
	}
	srv, err := ui.New(ui.Options{API: d.srv, Token: token, AllowRemote: allowRemote, Logger: d.log})
	if err != nil {
		return "", "", err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", "", usageErr("--ui %q: %v", addr, err)
	}
	go func() {
		if err := srv.Serve(ctx, ln); err != nil {
			d.log.Error("dashboard stopped", "err", err)
		}
	}()
	a := ln.Addr().String()
	d.log.Info("dashboard running", "url", "http://"+a+"/", "token_file", filepath.Join(d.home.dir, ui.TokenFileName))
	return "http://" + a + "/", srv.LoginURL(a), nil
}

// controlEvent is the control API's view of an engine event.
func controlEvent(ev negotiate.Event) control.Event {
	return control.Event{Kind: string(ev.Kind), Session: ev.Session, Phase: string(ev.Phase), Round: ev.Round, From: ev.From, Reason: ev.Reason}
}

// watchInbox publishes an EventMessage whenever a direct message arrives,
// until ctx ends.
func watchInbox(ctx context.Context, host *transport.Host, events *control.EventHub) {
	last := func() (int, time.Time) {
		items := host.Inbox()
		if len(items) == 0 {
			return 0, time.Time{}
		}
		return len(items), items[len(items)-1].ReceivedAt
	}
	n, at := last()
	t := time.NewTicker(inboxPollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n2, at2 := last(); n2 != n || !at2.Equal(at) {
			n, at = n2, at2
			items := host.Inbox()
			ev := control.Event{Kind: control.EventMessage}
			if len(items) > 0 {
				ev.From = items[len(items)-1].From
			}
			events.Publish(ev)
		}
	}
}

// describeRecord decodes an agreement entry's payload for the chain views.
func describeRecord(payload []byte) (*control.RecordDetail, error) {
	rec, err := engine.DecodeRecord(payload)
	if err != nil {
		return nil, fmt.Errorf("decode record: %w", err)
	}
	a := rec.Agreement
	d := &control.RecordDetail{Session: a.Session, Round: a.Round, Terms: termsJSON(a.Terms), Parties: []control.RecordParty{}}
	for i, p := range a.Parties {
		rp := control.RecordParty{AgentID: p.ID, Scheme: p.Scheme}
		if i < len(rec.Heads) {
			rp.HeadSeq = rec.Heads[i].Seq
		}
		if i < len(rec.Signatures) {
			rp.Signature = hex.EncodeToString(rec.Signatures[i])
		}
		d.Parties = append(d.Parties, rp)
	}
	if a.Witness != nil {
		d.Witness = a.Witness.ID
	}
	return d, nil
}

func init() { commandBuilders = append(commandBuilders, eventsCommand) }

// eventsCommand follows the node's event stream, the one the dashboard uses.
func eventsCommand() *cli.Command {
	return &cli.Command{
		Name:  "events",
		Usage: "follow the running node's events (proposals, counters, phases, outcomes, direct messages) until Ctrl-C",
		Description: "One line per event: time, kind, session, round, from. --json: one object per line\n" +
			"{\"seq\",\"kind\",\"session\",\"phase\",\"round\",\"from\",\"reason\",\"at\"}. A \"resync\" event\n" +
			"means this reader fell behind and lost events.",
		Flags: withJSON(),
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			return withNode(c, func(cl *control.Client) error {
				err := cl.Events(c.Context, func(ev control.Event) error {
					if wantJSON(c) {
						return printJSON(c, ev)
					}
					if ev.Kind == control.EventHello {
						return nil
					}
					line := time.UnixMilli(ev.At).UTC().Format("2006-01-02T15:04:05.000Z") + "  " + ev.Kind
					if ev.Session != "" {
						line += "  " + shortSession(ev.Session)
					}
					if ev.Phase != "" {
						line += "  " + ev.Phase
					}
					if ev.Round != 0 {
						line += fmt.Sprintf("  round %d", ev.Round)
					}
					if ev.From != "" {
						line += "  from " + ev.From.Short()
					}
					if ev.Reason != "" {
						line += "  " + ev.Reason
					}
					_, err := fmt.Fprintln(c.App.Writer, line)
					return err
				})
				if c.Context.Err() != nil {
					return nil // Ctrl-C
				}
				if err == nil {
					return fmt.Errorf("the node closed the event stream (it stopped)")
				}
				return err
			})
		},
	}
}
