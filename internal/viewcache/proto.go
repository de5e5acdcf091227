package viewcache

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
)

// Stage is the holder's argv[0] and the value of the stage marker.
const Stage = "closet-views"

// sockFD is the holder's end of the socket to its cache.
const sockFD = 3

// request asks the holder for a copy of the view Key names. A request
// without Paths is answered with Need when the holder has no such view;
// the cache then sends Paths, taken from StoreRoot's store ("" for the
// host's), whose key the holder checks. (A 10,000-path closure is 600 KB
// of JSON: a hit sends only the key.) One JSON line.
type request struct {
	// Refill asks for the spare copies taken since the last refill; it
	// has no reply.
	Refill    bool     `json:"refill,omitempty"`
	Key       string   `json:"key"`
	StoreRoot string   `json:"storeRoot,omitempty"`
	Paths     []string `json:"paths"`
}

// reply answers a request: Err, or the copy's fd as SCM_RIGHTS beside
// this JSON line, with the cache's figures after the request.
type reply struct {
	Err  string `json:"err,omitempty"`
	Need bool   `json:"need,omitempty"` // send the paths: no view has this key
	Stats
}

// Stats are the cache's figures.
type Stats struct {
	Views     int `json:"views"`     // views cached now
	Paths     int `json:"paths"`     // store paths in them
	Hits      int `json:"hits"`      // takes served from a cached view
	Misses    int `json:"misses"`    // takes that built a view
	Evictions int `json:"evictions"` // views dropped to stay in bounds
	// Hit says whether the last take was a hit.
	Hit bool `json:"hit"`
}

// key names a view: the store and the exact set of paths.
func key(storeRoot string, paths []string) string {
	ps := slices.Clone(paths)
	slices.Sort(ps)
	h := sha256.New()
	h.Write([]byte(storeRoot))
	for _, p := range slices.Compact(ps) {
		h.Write([]byte{0})
		h.Write([]byte(p))
	}
	return hex.EncodeToString(h.Sum(nil))
}
