"""The domain floor: pure decisions about what residents write and what the law asks.

Classification, the lexicon and text normalization, addresses and the buildings
directory, phones, regulatory clocks and incidents. No I/O: everything here is a
function of its arguments, so it tests in microseconds and any floor may use it.
"""
