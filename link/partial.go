package link

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/sftproject/sft/api"
)

// Partial transfers. While a session's files arrive, each lives beside its
// destination as ".sft-<session>-<index>.part", and one state file in the
// destination root, ".sft-<session>.state", records how many bytes of each
// are verified: synced to disk and received authenticated. A receiver that
// restarts within the session truncates each partial file to its verified
// length and asks the sender to continue from there. Only once every entry
// is complete are the files moved to their names, so a transfer is
// presented all at once or not at all.

// partialPrefix starts every name the link uses for partial data; the
// manifest may not use it.
const partialPrefix = ".sft-"

func partialName(sessionID string, m api.Manifest, i int) string {
	return path.Join(path.Dir(m.Files[i].Name), partialPrefix+fileToken(sessionID)+"-"+strconv.Itoa(i)+".part")
}

func stateName(sessionID string) string { return partialPrefix + fileToken(sessionID) + ".state" }

// fileToken is the session id as it appears in file names: itself when it
// is a plain token like the ids the session service issues, a digest of it
// otherwise, so no id can form a path.
func fileToken(sessionID string) string {
	if api.ValidSessionID(sessionID) == nil {
		return sessionID
	}
	sum := sha256.Sum256([]byte(sessionID))
	return hex.EncodeToString(sum[:8])
}

// partials tracks the verified lengths of a session's partial files inside
// the destination root.
type partials struct {
	root *os.Root
	sid  string
	m    api.Manifest

	mu       sync.Mutex
	verified map[int]int64
	dirs     []string // directories the session's attempts created
}

type stateFile struct {
	Verified map[int]int64 `json:"verified"`       // entry index → verified length
	Dirs     []string      `json:"dirs,omitempty"` // directories created for the transfer
}

// loadPartials reads the state a previous attempt left and checks each
// partial file still holds at least its verified length; an entry whose
// data is missing starts over.
func loadPartials(root *os.Root, sessionID string, m api.Manifest) (*partials, error) {
	p := &partials{root: root, sid: sessionID, m: m, verified: map[int]int64{}}
	b, err := readSmall(root, stateName(sessionID))
	if errors.Is(err, fs.ErrNotExist) {
		return p, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the state of an earlier attempt: %w", err)
	}
	var st stateFile
	if err := json.Unmarshal(b, &st); err != nil {
		// A torn or foreign state file costs a restart, not the transfer.
		return p, nil
	}
	for i, n := range st.Verified {
		if i < 0 || i >= len(m.Files) || m.Files[i].Dir || n <= 0 || n > m.Files[i].Size {
			continue
		}
		fi, err := root.Lstat(partialName(sessionID, m, i))
		if err != nil || !fi.Mode().IsRegular() || fi.Size() < n {
			continue
		}
		p.verified[i] = n
	}
	for _, d := range st.Dirs {
		if slices.ContainsFunc(m.Files, func(f api.File) bool { return strings.HasPrefix(f.Name, d+"/") || f.Name == d }) {
			p.dirs = append(p.dirs, d)
		}
	}
	return p, nil
}

func readSmall(root *os.Root, name string) ([]byte, error) {
	f, err := root.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, 64<<20))
}

func (p *partials) offset(i int) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.verified[i]
}

// record notes that entry i holds n verified bytes and saves the state
// atomically (write, sync, rename), so a crash leaves the old or the new
// state, either of which is true.
func (p *partials) record(i int, n int64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if i >= 0 {
		p.verified[i] = n
	}
	b, err := json.Marshal(stateFile{Verified: p.verified, Dirs: p.dirs})
	if err != nil {
		return err
	}
	name := stateName(p.sid)
	f, err := p.root.OpenFile(name+".tmp", os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("saving resume state: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = p.root.Rename(name+".tmp", name)
	}
	if err != nil {
		return fmt.Errorf("saving resume state: %w", err)
	}
	return nil
}

// addDirs records directories made for the transfer, so that a resumed
// attempt still knows they are the transfer's to give modes and times to
// (or to remove).
func (p *partials) addDirs(dirs []string) error {
	if len(dirs) == 0 {
		return nil
	}
	p.mu.Lock()
	p.dirs = append(p.dirs, dirs...)
	p.mu.Unlock()
	return p.record(-1, 0)
}

// discard removes every partial file and the state.
func (p *partials) discard() {
	for i, f := range p.m.Files {
		if !f.Dir {
			p.root.Remove(partialName(p.sid, p.m, i))
		}
	}
	p.root.Remove(stateName(p.sid) + ".tmp")
	p.root.Remove(stateName(p.sid))
}

// Discard removes what an interrupted transfer of session sessionID left in
// dir for a resume: call it when the session will not be resumed (it was
// cancelled, failed or expired).
func Discard(dir, sessionID string, m api.Manifest) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	p := &partials{root: root, sid: sessionID, m: m}
	p.discard()
	return nil
}

// Held returns how many bytes of session sessionID's files dir already
// holds from an interrupted attempt, so a free-space check can count only
// what is still to come.
func Held(dir, sessionID string, m api.Manifest) int64 {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return 0
	}
	defer root.Close()
	p, err := loadPartials(root, sessionID, m)
	if err != nil {
		return 0
	}
	var n int64
	for _, v := range p.verified {
		n += v
	}
	return n
}
