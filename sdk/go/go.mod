module weir

go 1.24
