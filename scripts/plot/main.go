// Command plot runs the benchmarks behind docs/performance.md on this
// machine and writes their figures (perf-data.json) and two plots
// (perf-latency.svg: latency against parties; perf-throughput.svg:
// throughput against concurrency) into a directory. It needs no external
// tools:
//
//	go run ./scripts/plot -out docs
//
// With -network it runs the network-size sweeps instead (`negotiate bench
// --network`, without churn and with -churn) and writes perf-network.json
// and perf-network.svg (lookup success, hops, lookup time and first-contact
// time against the number of agents); -network-from redraws that plot from
// files written by `negotiate bench --network ... --out FILE`:
//
//	go run ./scripts/plot -network 50,100,250,500,1000 -out docs
//	go run ./scripts/plot -network-from a.json,b.json -out docs
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/negotiate-dev/negotiate/internal/bench"
)

// Data is everything one plot run measured.
type Data struct {
	Date      string          `json:"date"`
	ByParties []*bench.Result `json:"by_parties"`
	ByConc    []*bench.Result `json:"by_concurrency"`
	// The same two sweeps with signed offers (bench.Options.Offer).
	ByPartiesOffer []*bench.Result          `json:"by_parties_offer"`
	ByConcOffer    []*bench.Result          `json:"by_concurrency_offer"`
	BySchemes      []*bench.Result          `json:"by_scheme"`
	IdleHeap       *bench.HeapResult        `json:"idle_heap"`
	Errors         []string                 `json:"errors,omitempty"`
	Summary        map[string]float64       `json:"summary"`
	SchemeRatio    map[string]float64       `json:"scheme_p50_vs_ed25519"`
	Extra          map[string]*bench.Result `json:"extra,omitempty"`
}

func main() {
	out := flag.String("out", "docs", "directory for perf-data.json and the SVG plots")
	sessions := flag.Int("sessions", 40, "sessions per latency point")
	parties := flag.String("parties", "2,3,5,8,16,32", "party counts of the latency plot")
	concs := flag.String("concurrency", "1,2,4,8,16,32,48", "concurrency levels of the throughput plot (pairs = concurrency)")
	perConc := flag.Int("sessions-per-pair", 100, "sessions per pair in the throughput runs")
	idle := flag.Int("idle", 10000, "idle sessions for the heap measurement")
	network := flag.String("network", "", "run the network-size sweeps over these sizes instead (e.g. 50,100,250,500,1000)")
	churn := flag.Float64("churn", 0.1, "with -network: churn share of the second sweep (0: none)")
	networkFrom := flag.String("network-from", "", "draw perf-network.svg from these files of `negotiate bench --network --out` instead (comma-separated)")
	flag.Parse()
	if *network != "" || *networkFrom != "" {
		if err := runNetwork(*out, *network, *churn, *networkFrom); err != nil {
			fmt.Fprintln(os.Stderr, "plot:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*out, *sessions, ints(*parties), ints(*concs), *perConc, *idle); err != nil {
		fmt.Fprintln(os.Stderr, "plot:", err)
		os.Exit(1)
	}
}

func ints(s string) []int {
	var xs []int
	for _, f := range strings.Split(s, ",") {
		var x int
		if _, err := fmt.Sscan(strings.TrimSpace(f), &x); err == nil {
			xs = append(xs, x)
		}
	}
	return xs
}

func run(out string, sessions int, parties, concs []int, perConc, idle int) error {
	ctx := context.Background()
	d := &Data{Date: time.Now().UTC().Format(time.RFC3339), Summary: map[string]float64{}, SchemeRatio: map[string]float64{}}
	one := func(o bench.Options) *bench.Result {
		o.GCPercent = bench.DefaultGCPercent // as `negotiate bench` runs
		fmt.Fprintf(os.Stderr, "plot: parties %d, sessions %d, concurrency %d, pairs %d, scheme %q, store %q, offer %v...", o.Parties, o.Sessions, o.Concurrency, o.Pairs, o.Scheme, o.Store, o.Offer)
		r, err := bench.Run(ctx, o)
		if err != nil {
			d.Errors = append(d.Errors, err.Error())
			fmt.Fprintln(os.Stderr, " error:", err)
			return nil
		}
		if err := r.Err(); err != nil {
			d.Errors = append(d.Errors, err.Error())
		}
		fmt.Fprintf(os.Stderr, " p50 %.2f ms (%.2f floor units), %.1f/s, failed %d\n", r.Latency.P50, r.P50FloorRatio, r.SessionsPerSec, r.Failed)
		return r
	}
	for _, p := range parties {
		if r := one(bench.Options{Parties: p, Sessions: sessions}); r != nil {
			d.ByParties = append(d.ByParties, r)
		}
		if r := one(bench.Options{Parties: p, Sessions: sessions, Offer: true}); r != nil {
			d.ByPartiesOffer = append(d.ByPartiesOffer, r)
		}
	}
	for _, c := range concs {
		if r := one(bench.Options{Parties: 2, Sessions: perConc * c, Concurrency: c}); r != nil {
			d.ByConc = append(d.ByConc, r)
		}
		if r := one(bench.Options{Parties: 2, Sessions: perConc * c, Concurrency: c, Offer: true}); r != nil {
			d.ByConcOffer = append(d.ByConcOffer, r)
		}
	}
	for _, s := range []string{"ed25519", "ml-dsa-65", "ed25519-dilithium2"} {
		if r := one(bench.Options{Parties: 2, Sessions: sessions, Scheme: s}); r != nil {
			d.BySchemes = append(d.BySchemes, r)
		}
	}
	// The same runs with one chain file per agent (no group commit across
	// agents), for comparison with the shared store used above.
	d.Extra = map[string]*bench.Result{}
	for _, x := range []struct {
		name string
		o    bench.Options
	}{
		{"2party_per_agent", bench.Options{Parties: 2, Sessions: sessions, Store: bench.StorePerAgent}},
		{"8party_per_agent", bench.Options{Parties: 8, Sessions: sessions, Store: bench.StorePerAgent}},
		{"32pairs_per_agent", bench.Options{Parties: 2, Sessions: perConc * 32, Concurrency: 32, Store: bench.StorePerAgent}},
		{"2party_offer_per_agent", bench.Options{Parties: 2, Sessions: sessions, Store: bench.StorePerAgent, Offer: true}},
		// The example: 200 agents in 100 pairs.
		{"100pairs", bench.Options{Parties: 2, Sessions: perConc * 50, Concurrency: 100, Pairs: 100}},
		{"100pairs_offer", bench.Options{Parties: 2, Sessions: perConc * 50, Concurrency: 100, Pairs: 100, Offer: true}},
	} {
		if r := one(x.o); r != nil {
			d.Extra[x.name] = r
		}
	}
	h, err := bench.IdleHeap(idle, "ed25519")
	if err != nil {
		d.Errors = append(d.Errors, err.Error())
	}
	d.IdleHeap = h
	summarize(d)
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, "perf-data.json"), append(js, '\n'), 0o644); err != nil {
		return err
	}
	var xs []string
	var p50, p90, ratio, op50 []float64
	for i, r := range d.ByParties {
		xs = append(xs, fmt.Sprint(r.Parties))
		p50, p90 = append(p50, r.Latency.P50), append(p90, r.Latency.P90)
		ratio = append(ratio, r.P50FloorRatio)
		if i < len(d.ByPartiesOffer) {
			op50 = append(op50, d.ByPartiesOffer[i].Latency.P50)
		}
	}
	lat := lineChart("Session latency vs parties (propose → durable on every chain)", "parties", "ms", xs,
		[]series{{"p50 negotiated", p50, "#1f77b4"}, {"p90 negotiated", p90, "#ff7f0e"}, {"p50 signed offer", op50, "#9467bd"}}, ratioLabels(ratio))
	if err := os.WriteFile(filepath.Join(out, "perf-latency.svg"), []byte(lat), 0o644); err != nil {
		return err
	}
	xs = nil
	var tput, lp50, otput []float64
	for i, r := range d.ByConc {
		xs = append(xs, fmt.Sprint(r.Concurrency))
		tput, lp50 = append(tput, r.SessionsPerSec), append(lp50, r.Latency.P50)
		if i < len(d.ByConcOffer) {
			otput = append(otput, d.ByConcOffer[i].SessionsPerSec)
		}
	}
	tp := lineChart("Throughput vs concurrency (2 parties, pairs = concurrency, shared store)", "concurrency (groups busy at once)", "sessions/s", xs,
		[]series{{"negotiated", tput, "#2ca02c"}, {"signed offer", otput, "#9467bd"}}, msLabels(lp50))
	if err := os.WriteFile(filepath.Join(out, "perf-throughput.svg"), []byte(tp), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "plot: wrote %s/perf-data.json, perf-latency.svg, perf-throughput.svg\n", out)
	if len(d.Errors) > 0 {
		return fmt.Errorf("%d runs had errors: %v", len(d.Errors), d.Errors)
	}
	return nil
}

func summarize(d *Data) {
	// One set of figures per session kind; offers' keys carry "_offer".
	for _, kind := range []struct {
		tag           string
		parties, conc []*bench.Result
	}{{"", d.ByParties, d.ByConc}, {"_offer", d.ByPartiesOffer, d.ByConcOffer}} {
		byP := map[int]*bench.Result{}
		for _, r := range kind.parties {
			byP[r.Parties] = r
		}
		if r := byP[2]; r != nil {
			d.Summary["p50_2party"+kind.tag+"_ms"] = r.Latency.P50
			d.Summary["p50_2party"+kind.tag+"_floor_ratio"] = r.P50FloorRatio
			if r8 := byP[8]; r8 != nil {
				d.Summary["p50_8party_vs_2party"+kind.tag] = round(r8.Latency.P50 / r.Latency.P50)
			}
		}
		for _, r := range kind.conc {
			key := "max_sessions_per_sec" + kind.tag
			d.Summary[key] = math.Max(d.Summary[key], r.SessionsPerSec)
		}
	}
	for _, name := range []string{"100pairs", "100pairs_offer"} {
		if r := d.Extra[name]; r != nil {
			d.Summary["sessions_per_sec_"+name] = r.SessionsPerSec
		}
	}
	var base float64
	for _, r := range d.BySchemes {
		if r.Scheme == "ed25519" {
			base = r.Latency.P50
		}
	}
	for _, r := range d.BySchemes {
		if base > 0 {
			d.SchemeRatio[r.Scheme] = round(r.Latency.P50 / base)
		}
	}
	if d.IdleHeap != nil {
		d.Summary["idle_participant_heap_mib"] = d.IdleHeap.ParticipantMiB
	}
}

func round(x float64) float64 { return math.Round(x*100) / 100 }

func ratioLabels(r []float64) []string {
	var out []string
	for _, x := range r {
		out = append(out, fmt.Sprintf("%.1f×floor", x))
	}
	return out
}

func msLabels(r []float64) []string {
	var out []string
	for _, x := range r {
		out = append(out, fmt.Sprintf("p50 %.0f ms", x))
	}
	return out
}

type series struct {
	name  string
	ys    []float64
	color string
}

// lineChart draws a small SVG line chart over categorical x values; notes
// are printed above the first series' points.
func lineChart(title, xlabel, ylabel string, xs []string, ss []series, notes []string) string {
	const w, h, left, right, top, bottom = 720.0, 420.0, 70.0, 30.0, 50.0, 60.0
	pw, ph := w-left-right, h-top-bottom
	ymax := 0.0
	for _, s := range ss {
		for _, y := range s.ys {
			if !math.IsNaN(y) { // NaN: no point at that x
				ymax = math.Max(ymax, y)
			}
		}
	}
	step := niceStep(ymax / 5)
	ymax = math.Max(step, math.Ceil(ymax*1.1/step)*step)
	x := func(i int) float64 {
		if len(xs) <= 1 {
			return left + pw/2
		}
		return left + pw*float64(i)/float64(len(xs)-1)
	}
	y := func(v float64) float64 { return top + ph*(1-v/ymax) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="12">`+"\n", w, h, w, h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%.0f" y="24" font-size="15" text-anchor="middle">%s</text>`+"\n", w/2, esc(title))
	for v := 0.0; v <= ymax+step/2; v += step {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", left, y(v), left+pw, y(v))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`+"\n", left-6, y(v)+4, trim(v))
	}
	for i, lx := range xs {
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", x(i), top+ph+18, esc(lx))
	}
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333"/>`+"\n", left, top+ph, left+pw, top+ph)
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333"/>`+"\n", left, top, left, top+ph)
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", left+pw/2, h-16, esc(xlabel))
	fmt.Fprintf(&b, `<text x="18" y="%.1f" text-anchor="middle" transform="rotate(-90 18 %.1f)">%s</text>`+"\n", top+ph/2, top+ph/2, esc(ylabel))
	for si, s := range ss {
		var pts []string
		for i, v := range s.ys {
			if !math.IsNaN(v) {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(i), y(v)))
			}
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", s.color, strings.Join(pts, " "))
		for i, v := range s.ys {
			if math.IsNaN(v) {
				continue
			}
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"><title>%s %s: %s</title></circle>`+"\n", x(i), y(v), s.color, esc(s.name), esc(xs[i]), trim(v))
			if si == 0 && i < len(notes) {
				fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" font-size="10" fill="#555">%s</text>`+"\n", x(i), y(v)-9, esc(notes[i]))
			}
		}
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="14" height="3" fill="%s"/><text x="%.1f" y="%.1f">%s</text>`+"\n",
			left+12, top+8+16*float64(si), s.color, left+32, top+12+16*float64(si), esc(s.name))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func niceStep(x float64) float64 {
	if x <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(x)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= x {
			return m * p
		}
	}
	return 10 * p
}

func trim(v float64) string {
	s := fmt.Sprintf("%.2f", v)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s
}

func esc(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
