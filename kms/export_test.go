package kms

import "time"

// SetCacheClock replaces the cache's clock, so TTL tests need not sleep.
func SetCacheClock(c *Cache, now func() time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = now
}
