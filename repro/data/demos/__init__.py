"""Demo raw data builders, one module per dataset: a small real corpus an installed package ships
(never downloaded at run time), written in the dataset's official raw layout so that the real
reader and prepare code run on it. A section's ``RawFormat.demo`` calls its builder
(``repro data demo SECTION``; the cpu and smoke presets build it when nothing is prepared)."""
