package chain

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"

	"github.com/negotiate-dev/negotiate/sign"
)

// BackupInfo describes a backup: the chain it holds and its size.
type BackupInfo struct {
	AgentID sign.AgentID `json:"agent_id"`
	Length  uint64       `json:"length"`
	Head    Head         `json:"head"`
	Bytes   int64        `json:"bytes"`
}

// Backup writes a consistent copy of the chain file to w while the chain is
// open and taking writes: it first applies the journal to the file (so
// every write made before the call is in it), then copies the file as one
// bbolt read transaction sees it (Tx.WriteTo), a state between two whole
// Writes. Writes made during the copy go on and are not in it. The copy is
// a chain file of its own; Restore puts it back. A chain of a Store and a
// read-only chain whose journal holds writes not yet in the file cannot be
// backed up this way.
func (c *Chain) Backup(w io.Writer) (BackupInfo, error) {
	if c.store != nil {
		return BackupInfo{}, fmt.Errorf("chain: backup: %s is a store of several chains: copy the whole store with the process stopped", c.path)
	}
	if c.readOnly {
		if p := c.commits.snapshot(c.root); p != nil {
			return BackupInfo{}, fmt.Errorf("chain: backup: %s has journal writes not yet in the file: open it writable (with no node running) to back it up", c.path)
		}
	} else if err := c.commits.flushNow(); err != nil {
		return BackupInfo{}, fmt.Errorf("chain: backup: apply the journal first: %w", err)
	}
	info := BackupInfo{AgentID: c.agent}
	err := c.db.View(func(tx *bolt.Tx) error {
		meta := c.bucket(tx, bucketMeta)
		if meta == nil {
			return fmt.Errorf("%w: %s has no meta bucket", ErrNotChain, c.path)
		}
		if err := decMode.Unmarshal(meta.Get(keyHead), &info.Head); err != nil {
			return fmt.Errorf("%w: damaged head record: %v", ErrNotChain, err)
		}
		info.Length = info.Head.Seq + 1
		n, err := tx.WriteTo(w)
		info.Bytes = n
		return err
	})
	if err != nil {
		return BackupInfo{}, fmt.Errorf("chain: backup %s: %w", c.path, err)
	}
	return info, nil
}

// RestoreOptions configures Restore. The zero value refuses to replace a
// chain that is longer, diverges or is locked, and checks entries only
// (no agreement records).
type RestoreOptions struct {
	// Force replaces the chain even when it is longer than the backup,
	// diverges from it or is locked: the entries only it holds are lost.
	Force bool
	// Agent, when set, is the agent the backup must belong to.
	Agent sign.AgentID
	// Verify is passed to Verify on the backup before anything is replaced.
	Verify VerifyOptions
}

// RestoreInfo says what Restore did.
type RestoreInfo struct {
	AgentID sign.AgentID `json:"agent_id"`
	Length  uint64       `json:"length"` // of the restored chain
	Head    Head         `json:"head"`
	// Replaced is the length of the chain the backup replaced (0 when
	// there was none); Dropped the entries it had beyond the backup.
	Replaced uint64 `json:"replaced_length"`
	Dropped  uint64 `json:"dropped"`
	Forced   bool   `json:"forced"`
}

// ErrWouldShorten: Restore refused to replace a chain that holds entries
// the backup does not (longer, diverging or locked) without
// RestoreOptions.Force.
var ErrWouldShorten = errors.New("restore would lose entries")

// Restore puts the backup at backupPath back as the chain file at
// chainPath, which no process may hold open (ErrHeldByOther otherwise).
// It copies the backup next to chainPath, checks it is a chain (of
// opts.Agent, if set) and verifies it, and refuses (ErrWouldShorten,
// changing nothing) to replace a chain that is longer, diverges from the
// backup or is locked unless opts.Force. The restored file gets a new
// journal ID, so no journal written for the replaced file can ever be
// replayed into it; then it replaces chainPath in one rename.
func Restore(backupPath, chainPath string, opts RestoreOptions) (RestoreInfo, error) {
	tmp := chainPath + ".restore"
	os.Remove(tmp)
	for _, p := range journalPaths(tmp) {
		os.Remove(p)
	}
	if err := copyFile(backupPath, tmp); err != nil {
		return RestoreInfo{}, fmt.Errorf("chain: restore: %w", err)
	}
	keep := false
	defer func() {
		if !keep {
			os.Remove(tmp)
		}
	}()
	b, err := Open(tmp, Options{})
	if err != nil {
		return RestoreInfo{}, fmt.Errorf("chain: restore: backup %s: %w", backupPath, err)
	}
	info, err := checkBackup(b, backupPath, chainPath, opts)
	if err == nil {
		err = b.db.Update(func(tx *bolt.Tx) error {
			id := make([]byte, journalIDSize)
			if _, err := rand.Read(id); err != nil {
				return err
			}
			meta := tx.Bucket(bucketMeta)
			if err := meta.Put(keyJournalID, id); err != nil {
				return err
			}
			return writeAppliedLSN(meta, 0)
		})
	}
	if cerr := b.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return RestoreInfo{}, err
	}
	for _, p := range journalPaths(chainPath) {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return RestoreInfo{}, fmt.Errorf("chain: restore: remove the old journal: %w", err)
		}
	}
	if err := os.Rename(tmp, chainPath); err != nil {
		return RestoreInfo{}, fmt.Errorf("chain: restore: %w", err)
	}
	keep = true
	if err := syncDir(filepath.Dir(chainPath)); err != nil {
		return RestoreInfo{}, fmt.Errorf("chain: restore: %w", err)
	}
	return info, nil
}

// checkBackup checks the opened copy b of backupPath against opts and the
// chain at chainPath (if any), and reports what restoring it would do.
func checkBackup(b *Chain, backupPath, chainPath string, opts RestoreOptions) (RestoreInfo, error) {
	info := RestoreInfo{AgentID: b.AgentID(), Length: b.Length(), Head: b.Head(), Forced: opts.Force}
	if opts.Agent != "" && b.AgentID() != opts.Agent {
		return info, fmt.Errorf("chain: restore: backup %s is the chain of agent %s, this home is agent %s", backupPath, b.AgentID(), opts.Agent)
	}
	if verr := b.Verify(opts.Verify); verr != nil {
		return info, fmt.Errorf("chain: restore: backup %s does not verify: %w", backupPath, verr)
	}
	if _, err := os.Stat(chainPath); errors.Is(err, fs.ErrNotExist) {
		return info, nil
	}
	cur, err := Open(chainPath, Options{})
	if err != nil {
		return info, fmt.Errorf("chain: restore: %w", err)
	}
	defer cur.Close()
	if cur.AgentID() != b.AgentID() {
		return info, fmt.Errorf("chain: restore: backup %s is the chain of agent %s, %s is agent %s's", backupPath, b.AgentID(), chainPath, cur.AgentID())
	}
	info.Replaced = cur.Length()
	if cur.Length() > b.Length() {
		info.Dropped = cur.Length() - b.Length()
	}
	var why string
	switch {
	case cur.Length() > b.Length():
		why = fmt.Sprintf("%s holds %d entries, the backup %d: restoring drops seqs %d to %d", chainPath, cur.Length(), b.Length(), b.Length(), cur.Length()-1)
	default:
		at := cur.Head().Seq
		e, err := b.Entry(at)
		if err != nil {
			return info, fmt.Errorf("chain: restore: backup entry %d: %w", at, err)
		}
		if e.Hash() != cur.Head().Hash {
			why = fmt.Sprintf("the backup's entry %d differs from the one in %s: the backup is not this chain's history", at, chainPath)
		}
	}
	if why == "" {
		if l, ok := cur.Lock(); ok {
			why = fmt.Sprintf("%s is locked by session %s: restoring forgets this agent's vote in it", chainPath, l.Session)
		}
	}
	if why != "" && !opts.Force {
		return info, fmt.Errorf("chain: restore: %w: %s; use --force to restore anyway", ErrWouldShorten, why)
	}
	return info, nil
}

// copyFile copies src to a new file dst (mode 0600) and syncs it.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fileMode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(dst)
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if err := out.Sync(); err != nil {
		out.Close()
		os.Remove(dst)
		return fmt.Errorf("sync %s: %w", dst, err)
	}
	return out.Close()
}
