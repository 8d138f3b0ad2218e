package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/negotiate-dev/negotiate/negotiate/transport"
	"github.com/negotiate-dev/negotiate/sign"
)

// Listings without a server.
//
// A seller announces each category it sells in with a DHT provider record
// under CategoryKey(category) (transport.Host.Provide). A buyer finds the
// sellers of a category (transport.Host.FindProviders, which returns agent
// IDs it has checked against the agents' own DHT records), then asks each
// for its catalogue with a direct message (ContentTypeCatalogue). The
// catalogue is signed by the seller's agent key, so it can be passed on and
// checked by anyone; the DHT only says who to ask, never what is for sale.
//
// Why provider records rather than GossipSub: a buyer that arrives later
// still finds every seller (a gossip message is gone once sent), nothing
// is broadcast to agents that do not look, and the DHT is already there
// for agent records. Every agent of the market runs its DHT with
// transport.Config.Providers on, so the peers closest to a category key
// keep its records.

const (
	// ContentTypeCatalogue asks a seller for its signed catalogue.
	ContentTypeCatalogue = "marketplace/catalogue/v1"
	// catalogueDomain separates catalogue signatures from every other
	// signature an agent key makes.
	catalogueDomain = "marketplace/catalogue"
	// maxListings bounds a catalogue, so a direct answer stays small.
	maxListings = 64
)

// CategoryKey is the provider record key of a category.
func CategoryKey(category string) string { return "marketplace/category/" + category }

// Listing is one item for sale at a list price (in credits).
type Listing struct {
	ID       string `cbor:"id" json:"id"`
	Category string `cbor:"category" json:"category"`
	Item     string `cbor:"item" json:"item"`
	Price    int64  `cbor:"price" json:"price"`
}

// Catalogue is a seller's signed list of listings.
type Catalogue struct {
	Seller    sign.AgentID `cbor:"seller"`
	Scheme    string       `cbor:"scheme"`
	Key       []byte       `cbor:"key"`
	Issued    int64        `cbor:"issued"` // unix ms
	Listings  []Listing    `cbor:"listings"`
	Signature []byte       `cbor:"sig,omitempty"`
}

var detCBOR = func() cbor.EncMode {
	em, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	return em
}()

// SignCatalogue makes the signed catalogue of key's listings.
func SignCatalogue(key *sign.PrivateKey, listings []Listing, now time.Time) ([]byte, error) {
	if len(listings) > maxListings {
		return nil, fmt.Errorf("catalogue: %d listings, the limit is %d", len(listings), maxListings)
	}
	pub := key.Public()
	c := Catalogue{Seller: key.AgentID(), Scheme: pub.SchemeName(), Key: pub.Bytes(), Issued: now.UnixMilli(), Listings: listings}
	unsigned, err := detCBOR.Marshal(&c)
	if err != nil {
		return nil, fmt.Errorf("catalogue: encode: %w", err)
	}
	c.Signature = key.Sign(catalogueDomain, unsigned)
	return detCBOR.Marshal(&c)
}

// OpenCatalogue checks a signed catalogue from agent from: the key belongs
// to the seller it names, which is from, and the signature is valid.
func OpenCatalogue(from sign.AgentID, b []byte) (*Catalogue, error) {
	var c Catalogue
	if err := cbor.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("catalogue from %s: decode: %w", from.Short(), err)
	}
	if c.Seller != from {
		return nil, fmt.Errorf("catalogue from %s names seller %s", from.Short(), c.Seller.Short())
	}
	if len(c.Listings) > maxListings {
		return nil, fmt.Errorf("catalogue from %s: %d listings, the limit is %d", from.Short(), len(c.Listings), maxListings)
	}
	pub, err := sign.ParsePublicKey(c.Scheme, c.Key)
	if err != nil {
		return nil, fmt.Errorf("catalogue from %s: %w", from.Short(), err)
	}
	if err := from.Check(pub); err != nil {
		return nil, fmt.Errorf("catalogue from %s: %w", from.Short(), err)
	}
	sig := c.Signature
	c.Signature = nil
	unsigned, err := detCBOR.Marshal(&c)
	if err != nil {
		return nil, err
	}
	if err := pub.Verify(catalogueDomain, unsigned, sig); err != nil {
		return nil, fmt.Errorf("catalogue from %s: %w", from.Short(), err)
	}
	c.Signature = sig
	return &c, nil
}

// Offer is a listing found in a seller's catalogue.
type Offer struct {
	Seller  sign.AgentID
	Listing Listing
}

// FindOffers finds the sellers of category and returns their listings in
// it, cheapest first. Sellers that do not answer or whose catalogue does
// not verify are logged and left out.
func FindOffers(ctx context.Context, h *transport.Host, category string, logf func(string, ...any)) ([]Offer, error) {
	sellers, err := h.FindProviders(ctx, CategoryKey(category), 0)
	if err != nil {
		return nil, fmt.Errorf("find sellers of %s: %w", category, err)
	}
	var offers []Offer
	var errs []error
	for _, s := range sellers {
		if s == h.AgentID() {
			continue
		}
		r, err := h.Request(ctx, s, ContentTypeCatalogue, nil)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		c, err := OpenCatalogue(s, r.Payload)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, l := range c.Listings {
			if l.Category == category {
				offers = append(offers, Offer{Seller: s, Listing: l})
			}
		}
	}
	for _, e := range errs {
		logf("seller left out: %v", e)
	}
	if len(offers) == 0 && len(errs) > 0 {
		return nil, fmt.Errorf("find sellers of %s: %w", category, errors.Join(errs...))
	}
	sort.Slice(offers, func(i, j int) bool {
		if offers[i].Listing.Price != offers[j].Listing.Price {
			return offers[i].Listing.Price < offers[j].Listing.Price
		}
		return offers[i].Seller < offers[j].Seller
	})
	return offers, nil
}
