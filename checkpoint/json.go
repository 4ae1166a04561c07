package checkpoint

import (
	"encoding/json"
	"fmt"
	"os"
)

// LoadJSON decodes the JSON file at path (a config.json, model_index.json,
// ...) into v. Fields of the file that v lacks are ignored.
func LoadJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("checkpoint: %s: %w", path, err)
	}
	return nil
}
