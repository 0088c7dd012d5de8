module {{name}}

go 1.24

require weir v0.0.0

// The SDK of the Weir checkout this project was made from.
replace weir => {{weir}}/sdk/go
