public let kioskdVersion = "0.1.0"
