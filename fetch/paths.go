package fetch

import (
	"os"
	"path"
	"path/filepath"
	"strings"
)

// HomeEnv names the environment variable that overrides the cache folder.
const HomeEnv = "OSEDIFF_HOME"

// DefaultRepo is the Hugging Face repo id of the base model.
const DefaultRepo = "stabilityai/stable-diffusion-2-1-base"

// File names inside the weights folder.
const (
	OSEDiffFile     = "osediff.pkl"
	OSEDiffFaceFile = "osediff_face.pkl"
	RAMFile         = "ram_swin_large_14m.pth"
	DAPEFile        = "DAPE.pth"
)

// Paths says where the pipeline's files are stored.
type Paths struct {
	Home        string // the cache folder
	Model       string // diffusers folder of the base model
	Weights     string // folder of the checkpoints below
	OSEDiff     string // Weights/osediff.pkl
	OSEDiffFace string // Weights/osediff_face.pkl
	RAM         string // Weights/ram_swin_large_14m.pth
	DAPE        string // Weights/DAPE.pth
	Record      string // Home/downloads.json
}

// DefaultHome is $OSEDIFF_HOME, else os.UserCacheDir()/osediff, else
// os.TempDir()/osediff when the system has no user cache folder.
func DefaultHome() string {
	if h := os.Getenv(HomeEnv); h != "" {
		return h
	}
	if d, err := os.UserCacheDir(); err == nil && d != "" {
		return filepath.Join(d, "osediff")
	}
	return filepath.Join(os.TempDir(), "osediff")
}

// DefaultPaths returns the layout under DefaultHome for DefaultRepo.
func DefaultPaths() Paths { return PathsFor(DefaultHome(), DefaultRepo) }

// PathsFor returns the layout under home for the base model repo id (the
// model folder is models/<name> for a repo id "org/name").
func PathsFor(home, repo string) Paths {
	w := filepath.Join(home, "weights")
	return Paths{
		Home:        home,
		Model:       filepath.Join(home, "models", modelDirName(repo)),
		Weights:     w,
		OSEDiff:     filepath.Join(w, OSEDiffFile),
		OSEDiffFace: filepath.Join(w, OSEDiffFaceFile),
		RAM:         filepath.Join(w, RAMFile),
		DAPE:        filepath.Join(w, DAPEFile),
		Record:      filepath.Join(home, recordFile),
	}
}

// modelDirName is the last element of a repo id ("org/name" -> "name").
func modelDirName(repo string) string {
	name := path.Base(strings.Trim(repo, "/"))
	if name == "." || name == "/" || name == "" || name == ".." {
		return "model"
	}
	return name
}
