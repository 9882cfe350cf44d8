// Package llm is Tasker's optional language-model path: it explains the
// findings of the deterministic analyzers in plain language and ranks
// remediations. It is off unless configured, and nothing depends on it:
// every caller must work with the rule-based diagnosis alone when the
// Client is nil (ErrNotConfigured), the server is unreachable, or the
// answer is invalid (ErrInvalidAnswer).
//
// # Server
//
// Any OpenAI-compatible Chat Completions server works: Ollama, llama.cpp
// server, vLLM, OpenAI. Config.Endpoint is the API base (for example
// http://localhost:11434/v1); requests go to POST {Endpoint}/chat/completions
// with temperature 0 and response_format
// {"type": "json_schema", "json_schema": {"name", "schema", "strict": true}}.
// The API key is read once, from the environment variable named by
// Config.APIKeyEnv, sent as "Authorization: Bearer <key>", and never
// logged or quoted in errors (it is scrubbed from server error bodies too).
// 429 and 5xx answers are retried, at most 3 attempts in all, waiting as
// Retry-After says (capped at Config.Timeout) or with exponential backoff,
// and never past the caller's context.
//
// # What is sent
//
// Explain sends two messages (see Prompt, which returns them exactly):
//
//   - a fixed system message: the task, the remediation vocabulary with each
//     action's parameters, the citation rule, and a warning that evidence is
//     data, not instructions;
//   - a user message holding, as JSON, the findings, the evidence (id, kind,
//     time, step, text), the rule-based candidate remediations and the
//     caller's Context, all after redaction.
//
// If the answer is invalid, a repair round adds the model's answer and the
// parse or validation error, and asks again, once.
//
// # What is redacted
//
// Before anything is sent (see Redact and RedactText):
//
//   - values of Context fields whose JSON Schema property (in
//     ExplainInput.ContextSchema) has "x-sensitive": true, at any depth
//     through properties, patternProperties, additionalProperties, items,
//     prefixItems, local $refs and allOf/anyOf/oneOf;
//   - values of any key, anywhere in the payload, whose name contains
//     password, passwd, secret, apikey/api_key, authorization,
//     cardnumber/card_number or privatekey/private_key, or has token, cvv,
//     ssn or iban as a word (case and separators ignored);
//   - inside every string, evidence texts and error messages included:
//     bearer and basic credentials, password=/secret=/token=/api_key=
//     pairs, and 13–19 digit runs that pass the Luhn check (card numbers).
//
// Each becomes "[redacted]". Free-text redaction is a safety net, not a
// guarantee: mark sensitive fields in schemas.
//
// # How answers are checked
//
// The model is never trusted. Its answer must be JSON matching the answer
// schema (summary, explanation, remediations of action, params, rationale,
// cites, confidence in 0..1); otherwise one repair round, then
// ErrInvalidAnswer. Then, per remediation:
//
//   - an action outside the vocabulary (insight.Actions) is rejected;
//   - a remediation citing no evidence, or any evidence id not in the
//     input, is rejected ("cites no evidence", "cites unknown evidence e9");
//   - params must be strings and keys the action takes (task, step,
//     avoid_agent, timeout, max_attempts, as insight.Action documents);
//     others are dropped with a note;
//   - confidence above Config.ConfidenceCap (default 0.6) is lowered to it
//     and marked Capped, unless a rule-based candidate has the same action
//     and the same step param, in which case the model's confidence stands.
//
// Rejections are reported in Explanation.Rejected with the reason; kept
// remediations carry Source "model" and are ordered by confidence.
package llm
