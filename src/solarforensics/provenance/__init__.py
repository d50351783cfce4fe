"""The provenance battery: `run` plans the bytes, loads the weights (`weights`) and runs the tests (`battery/`, one
module per test); `verdict` combines their p-values under the fitted thresholds."""
