"""Readers of the file formats raw layouts come in, kept apart from the dataset modules that know
the layouts: TFRecord / tf.train.Example, parquet, staging rows back as an official layout, image
files and arrays (images), Debian packages (debian) and R's serialization (rdata)."""
