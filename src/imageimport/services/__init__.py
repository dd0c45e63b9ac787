"""What the entry points (CLI, API, operator, worker) share: starting, cancelling, retrying and
resuming imports, running one to the end in this process, and building what a process needs
to do so."""
