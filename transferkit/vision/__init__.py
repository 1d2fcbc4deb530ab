"""Image input shared by the tasks that read images: decoding, header checks, streaming, packs.

`images` decodes and resizes with the TensorFlow ops the serving graph uses,
`preprocessor` holds a run's image settings (`ImagePreprocessor`), `streaming`
checks image files from their headers and streams them through tf.data,
`packing` writes and opens TFRecord packs of image folders, whose records
`pack_records` defines. Core never imports this package: the image tasks
(image classification, object detection, audio's spectrogram images) do, and
the CLI's `data pack` command.
"""
