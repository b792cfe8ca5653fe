"""Pure tests: values in, values out. No sockets, no threads or daemons, no files beyond tmp."""
