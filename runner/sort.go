package runner

import (
	"slices"
	"strings"

	"github.com/kforward/kforward/forward"
)

func sortStatuses(s []forward.Status) {
	slices.SortFunc(s, func(a, b forward.Status) int { return strings.Compare(a.Name, b.Name) })
}
