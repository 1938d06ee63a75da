"""The shared command kit: what every `ovdet` subcommand uses, below the feature packages.

    parser     the one-line-error argparse `Parser`, `UsageError`, `common_options`, `whole_number`
    options    shared option groups (model, exemplars, vocabulary, images, --no-progress) and
               what they turn into (config overrides, the vocabulary, exemplars)
    runs       run folders runs/<task>/<name>: made when the first output is written
    images     image batches from the command line and the lazily built detector
    resume     the resume protocol of long runs (eval, calibrate, label): a run manifest

It imports no subcommand, so eval/, video/, label/... import it without a circle; the entry
point `ovdet.cli.app` sits on top and assembles the subcommands. The progress bar itself is
`ovdet.progress` (the core's loops, tiling and exemplars, show it too).
"""
