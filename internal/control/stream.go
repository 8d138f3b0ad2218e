package control

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// Stream copies the raw body of a route that answers with a *Stream (for
// example a receipt) to w.
func (c *Client) Stream(ctx context.Context, method, path string, w io.Writer) error {
	resp, err := c.send(ctx, method, path, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("control: %s %s: %w", method, path, err)
	}
	if msg := resp.Trailer.Get(StreamErrorTrailer); msg != "" {
		return errors.New("control: the node failed while streaming: " + msg)
	}
	return nil
}
