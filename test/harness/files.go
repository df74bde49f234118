package harness

import (
	"encoding/json"
	"os"
)

// listDir returns the names in dir, none if it does not exist.
func listDir(dir string) []string {
	entries, _ := os.ReadDir(dir)
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func writeJSON(t T, path string, v any) {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatalf("%v", err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatalf("%v", err)
	}
}
