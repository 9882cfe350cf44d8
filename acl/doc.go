// Package acl decides what an ACL token may do. It is pure: it holds no
// tokens and does no I/O. The agent resolves the token a call carries
// (from its configuration or the replicated state) and asks [Token.Allow]
// whether the call's [Request] is within the token's policy. docs/acl.md
// describes the policies for operators.
package acl
