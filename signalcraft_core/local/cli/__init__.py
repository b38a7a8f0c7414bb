"""The `signalcraft` command line, one module per group of commands."""
