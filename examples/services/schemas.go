package main

// The JSON Schemas each capability registers: the input it accepts (what
// the workflow's input mappings build) and the result it returns, which
// satisfies the step's result_schema in examples/order-fulfilment.yaml
// and adds a few fields of its own.

const itemsSchema = `{"type":"array","minItems":1,"items":{"type":"object","required":["sku","quantity"],
	"properties":{"sku":{"type":"string"},"quantity":{"type":"integer","minimum":1}}}}`

const validateInputSchema = `{"type":"object","required":["order_id","customer_id","items"],"properties":{
	"order_id":{"type":"string"},
	"customer_id":{"type":"string"},
	"items":` + itemsSchema + `}}`

const validateResultSchema = `{"type":"object","required":["valid","risk_score"],"properties":{
	"valid":{"type":"boolean"},
	"risk_score":{"type":"number","minimum":0,"maximum":1},
	"order_id":{"type":"string"},
	"checked_at":{"type":"string","format":"date-time"}}}`

const reserveInputSchema = `{"type":"object","required":["order_id","items"],"properties":{
	"order_id":{"type":"string"},
	"items":` + itemsSchema + `}}`

const reserveResultSchema = `{"type":"object","required":["reservation_id","expires_at"],"properties":{
	"reservation_id":{"type":"string"},
	"expires_at":{"type":"string","format":"date-time"},
	"lines":{"type":"integer"},
	"reserved_at":{"type":"string","format":"date-time"}}}`

const chargeInputSchema = `{"type":"object","required":["order_id","token","amount_cents","currency"],"properties":{
	"order_id":{"type":"string"},
	"token":{"type":"string"},
	"amount_cents":{"type":"integer","minimum":1},
	"currency":{"enum":["EUR","USD","GBP"]},
	"risk_score":{"type":["number","null"],"minimum":0,"maximum":1}}}`

const chargeResultSchema = `{"type":"object","required":["charge_id","status"],"properties":{
	"charge_id":{"type":"string"},
	"status":{"enum":["captured","pending_review"]},
	"amount_cents":{"type":"integer"},
	"currency":{"type":"string"},
	"captured_at":{"type":"string","format":"date-time"}}}`

const shipInputSchema = `{"type":"object","required":["order_id","reservation","charge"],"properties":{
	"order_id":{"type":"string"},
	"reservation":{"type":"string"},
	"charge":{"type":"string"},
	"address":{"type":["object","null"],"properties":{
		"line1":{"type":"string"},"city":{"type":"string"},"postcode":{"type":"string"},
		"country":{"type":"string","minLength":2,"maxLength":2}}},
	"service":{"enum":["standard","express"]}}}`

const shipResultSchema = `{"type":"object","required":["tracking_number","carrier"],"properties":{
	"tracking_number":{"type":"string"},
	"carrier":{"type":"string"},
	"eta_days":{"type":"integer"},
	"booked_at":{"type":"string","format":"date-time"}}}`

const emailInputSchema = `{"type":"object","required":["to","template"],"properties":{
	"to":{"type":"string","format":"email"},
	"template":{"type":"string"},
	"vars":{"type":"object","additionalProperties":{"type":"string"}}}}`

const emailResultSchema = `{"type":"object","required":["message_id","to"],"properties":{
	"message_id":{"type":"string"},
	"to":{"type":"string"},
	"template":{"type":"string"},
	"sent_at":{"type":"string","format":"date-time"}}}`
