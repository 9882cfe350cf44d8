// The JSON Schemas payments.charge registers, exactly the Go services'
// (examples/services/schemas.go): the input it accepts and the result it
// returns, which satisfies the charge step's result_schema in
// examples/order-fulfilment.yaml.

export const chargeInputSchema = `{"type":"object","required":["order_id","token","amount_cents","currency"],"properties":{
	"order_id":{"type":"string"},
	"token":{"type":"string"},
	"amount_cents":{"type":"integer","minimum":1},
	"currency":{"enum":["EUR","USD","GBP"]},
	"risk_score":{"type":["number","null"],"minimum":0,"maximum":1}}}`;

export const chargeResultSchema = `{"type":"object","required":["charge_id","status"],"properties":{
	"charge_id":{"type":"string"},
	"status":{"enum":["captured","pending_review"]},
	"amount_cents":{"type":"integer"},
	"currency":{"type":"string"},
	"captured_at":{"type":"string","format":"date-time"}}}`;
