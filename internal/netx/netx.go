// Package netx holds what kforward needs to know about network errors
// that the standard library leaves to each operating system.
package netx
