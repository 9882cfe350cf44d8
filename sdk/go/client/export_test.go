package client

import "time"

// SetDelays shortens the delays between the watches of Wait for tests.
func SetDelays(c *Client, retryMin, retryMax time.Duration) {
	c.retryMin, c.retryMax = retryMin, retryMax
}
