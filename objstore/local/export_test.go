package local

// PendingSyncs returns how many paths wait for Sync.
func PendingSyncs(s *Store) int {
	s.pendMu.Lock()
	defer s.pendMu.Unlock()
	return len(s.pending)
}

// MaxPending is maxPending, for tests.
const MaxPending = maxPending
