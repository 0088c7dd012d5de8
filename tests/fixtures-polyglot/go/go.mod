module weir-fixtures

go 1.24

require weir v0.0.0

replace weir => ../../../sdk/go
