package closure

import "github.com/closet-sandbox/closet/internal/storepath"

// ReferencesFirst orders the paths of a closure for the sandbox's Control.AddPaths: each
// path after every path it refers to, so that the job never sees a path
// whose references are missing, even while a request is being served.
// Paths for which visible is true (already in the view) are left out;
// references outside infos are taken as visible. Cycles (a path referring
// to itself) are harmless. infos must carry their references
// (Store.Closure with refs); without, the order is infos' own.
func ReferencesFirst(infos []Info, visible func(storepath.Path) bool) []string {
	byPath := make(map[storepath.Path]*Info, len(infos))
	for i := range infos {
		byPath[infos[i].Path] = &infos[i]
	}
	done := make(map[storepath.Path]bool, len(infos))
	out := make([]string, 0, len(infos))
	var visit func(p storepath.Path)
	visit = func(p storepath.Path) {
		info, ok := byPath[p]
		if done[p] || !ok {
			return
		}
		done[p] = true
		for _, r := range info.References {
			visit(r)
		}
		if visible == nil || !visible(p) {
			out = append(out, string(p))
		}
	}
	for _, i := range infos {
		visit(i.Path)
	}
	return out
}
