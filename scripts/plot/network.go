package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/negotiate-dev/negotiate/internal/bench"
)

// NetworkData is perf-network.json: the network-size sweeps.
type NetworkData struct {
	Date    string                 `json:"date"`
	NoChurn []*bench.NetworkResult `json:"no_churn"`
	Churn   []*bench.NetworkResult `json:"churn"`
	Errors  []string               `json:"errors,omitempty"`
}

// add files a run by churn; a churn run's no-churn phase goes with the
// no-churn runs, unless a run of its own covers that size.
func (d *NetworkData) add(r *bench.NetworkResult) {
	if r.Churn > 0 {
		d.Churn = append(d.Churn, r)
		if r.NoChurn != nil {
			d.NoChurn = append(d.NoChurn, r.NoChurn)
		}
		return
	}
	d.NoChurn = append(d.NoChurn, r)
}

// sweepFile is what `negotiate bench --network --out FILE` writes.
type sweepFile struct {
	Date string                 `json:"date"`
	Runs []*bench.NetworkResult `json:"runs"`
}

func runNetwork(out, sizes string, churn float64, from string) error {
	d := &NetworkData{Date: time.Now().UTC().Format(time.RFC3339)}
	if from != "" {
		for _, path := range strings.Split(from, ",") {
			raw, err := os.ReadFile(strings.TrimSpace(path))
			if err != nil {
				return err
			}
			var f sweepFile
			if err := json.Unmarshal(raw, &f); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			for _, r := range f.Runs {
				d.add(r)
			}
		}
	} else {
		ns, err := bench.ParseSizes(sizes)
		if err != nil {
			return err
		}
		// A run with churn measures the same network without churn first.
		for _, c := range []float64{churn} {
			for _, n := range ns {
				fmt.Fprintf(os.Stderr, "plot: network of %d agents, churn %.0f%%...", n, c*100)
				r, err := bench.RunNetwork(context.Background(), bench.NetworkOptions{Nodes: n, Churn: c})
				if err != nil {
					d.Errors = append(d.Errors, err.Error())
					fmt.Fprintln(os.Stderr, " error:", err)
					continue
				}
				if err := r.Err(); err != nil {
					d.Errors = append(d.Errors, err.Error())
				}
				fmt.Fprintf(os.Stderr, " lookups %.1f%%, hops p50 %.0f, first contact p50 %.0f ms, failed %d\n",
					r.LookupSuccessRate*100, r.LookupHopsP50, r.FirstContactMsP50, r.SessionsFailed)
				d.add(r)
			}
		}
	}
	d.NoChurn, d.Churn = bySize(d.NoChurn), bySize(d.Churn)
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, "perf-network.json"), append(js, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, "perf-network.svg"), []byte(networkChart(d)), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "plot: wrote %s/perf-network.json, perf-network.svg\n", out)
	if len(d.Errors) > 0 {
		return errors.New(strings.Join(d.Errors, "; "))
	}
	return nil
}

// networkChart stacks five charts against the network size: lookup
// success, hops, lookup time and lookup round trips (each with a log N
// reference) and first contact.
func networkChart(d *NetworkData) string {
	base := d.NoChurn
	if len(base) == 0 {
		base = d.Churn
	}
	var xs []string
	for _, r := range base {
		xs = append(xs, fmt.Sprint(r.Nodes))
	}
	pick := func(rs []*bench.NetworkResult, f func(*bench.NetworkResult) float64) []float64 {
		by := map[int]float64{}
		for _, r := range rs {
			by[r.Nodes] = f(r)
		}
		var ys []float64
		for _, r := range base {
			y, ok := by[r.Nodes]
			if !ok {
				y = math.NaN()
			}
			ys = append(ys, y)
		}
		return ys
	}
	churnName := "with churn (live agents)"
	if len(d.Churn) > 0 {
		churnName = fmt.Sprintf("%.0f%% churn (live agents)", d.Churn[0].Churn*100)
	}
	success := pick(d.NoChurn, func(r *bench.NetworkResult) float64 { return r.LookupSuccessRate * 100 })
	var notes []string
	for _, y := range success {
		notes = append(notes, fmt.Sprintf("%.1f%%", y))
	}
	// The log N reference goes through the first no-churn point.
	var ref []float64
	lp50 := pick(d.NoChurn, func(r *bench.NetworkResult) float64 { return r.LookupMsP50 })
	if len(base) > 0 && len(lp50) > 0 && !math.IsNaN(lp50[0]) {
		for _, r := range base {
			ref = append(ref, lp50[0]*math.Log2(float64(r.Nodes))/math.Log2(float64(base[0].Nodes)))
		}
	}
	// The same reference for the lookup's cost in round trips (lookup time
	// over a round trip measured in the same phase, which factors out the
	// load of N nodes sharing this machine's cores).
	var refRTT []float64
	lrtt := pick(d.NoChurn, func(r *bench.NetworkResult) float64 { return nanIfZero(r.LookupRoundTripsP50) })
	if len(base) > 0 && len(lrtt) > 0 && !math.IsNaN(lrtt[0]) {
		for _, r := range base {
			refRTT = append(refRTT, lrtt[0]*math.Log2(float64(r.Nodes))/math.Log2(float64(base[0].Nodes)))
		}
	}
	charts := []string{
		lineChart("Lookup success vs network size (lookups of random agents by random agents)", "agents", "% found", xs, []series{
			{"no churn", success, "#2ca02c"},
			{churnName, pick(d.Churn, func(r *bench.NetworkResult) float64 { return r.LookupSuccessRate * 100 }), "#d62728"},
		}, notes),
		lineChart("Lookup hops vs network size (query-path depth of the closest peer that answered)", "agents", "hops", xs, []series{
			{"p50 no churn", pick(d.NoChurn, func(r *bench.NetworkResult) float64 { return r.LookupHopsP50 }), "#1f77b4"},
			{"p90 no churn", pick(d.NoChurn, func(r *bench.NetworkResult) float64 { return r.LookupHopsP90 }), "#ff7f0e"},
			{"p50 " + churnName, pick(d.Churn, func(r *bench.NetworkResult) float64 { return r.LookupHopsP50 }), "#d62728"},
		}, nil),
		lineChart("Lookup time vs network size", "agents", "ms", xs, []series{
			{"p50 no churn", lp50, "#1f77b4"},
			{"p50 " + churnName, pick(d.Churn, func(r *bench.NetworkResult) float64 { return r.LookupMsP50 }), "#d62728"},
			{"log2 N through the first point", ref, "#999999"},
		}, nil),
		lineChart("Lookup time in round trips vs network size (lookup p50 / signed ping p50, same phase)", "agents", "round trips", xs, []series{
			{"no churn", lrtt, "#1f77b4"},
			{churnName, pick(d.Churn, func(r *bench.NetworkResult) float64 { return nanIfZero(r.LookupRoundTripsP50) }), "#d62728"},
			{"log2 N through the first point", refRTT, "#999999"},
		}, nil),
		lineChart("First contact vs network size (lookup + dial + 2-party signed offer)", "agents", "ms", xs, []series{
			{"p50 no churn", pick(d.NoChurn, func(r *bench.NetworkResult) float64 { return r.FirstContactMsP50 }), "#9467bd"},
			{"p99 no churn", pick(d.NoChurn, func(r *bench.NetworkResult) float64 { return r.FirstContactMsP99 }), "#8c564b"},
			{"p50 " + churnName, pick(d.Churn, func(r *bench.NetworkResult) float64 { return r.FirstContactMsP50 }), "#d62728"},
		}, nil),
	}
	const w, h = 720.0, 420.0
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f">`+"\n", w, h*float64(len(charts)), w, h*float64(len(charts)))
	for i, c := range charts {
		fmt.Fprintf(&b, `<g transform="translate(0 %.0f)">`+"\n", h*float64(i))
		b.WriteString(c)
		b.WriteString("</g>\n")
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// bySize sorts runs by size and keeps the last run of each size.
func bySize(rs []*bench.NetworkResult) []*bench.NetworkResult {
	last := map[int]*bench.NetworkResult{}
	for _, r := range rs {
		last[r.Nodes] = r
	}
	var out []*bench.NetworkResult
	for _, r := range last {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Nodes < out[j].Nodes })
	return out
}

// nanIfZero leaves out a figure an older run did not measure.
func nanIfZero(v float64) float64 {
	if v == 0 {
		return math.NaN()
	}
	return v
}
