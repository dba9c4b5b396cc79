"""Neural-collapse diagnostics, class-imbalance analysis and scene visualization."""
