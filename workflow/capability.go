package workflow

import "fmt"

// CheckCapabilityName reports whether name is a valid capability name:
// dotted lowercase words such as "payments.charge".
func CheckCapabilityName(name string) error {
	if !capabilityRE.MatchString(name) {
		return fmt.Errorf("%q is not a valid capability name: use dotted lowercase words such as payments.charge", name)
	}
	return nil
}

// CompileSchema compiles a JSON Schema given as JSON text (an app's
// advertised input or output schema). Only local $refs are allowed.
func CompileSchema(name string, schemaJSON []byte) (*Contract, error) {
	doc, err := DecodeJSON(schemaJSON)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	c, err := newContract(manifestBase+"capabilities/"+name, doc)
	if err != nil {
		return nil, fmt.Errorf("%s: invalid JSON Schema: %s", name, schemaErr(err))
	}
	return c, nil
}
