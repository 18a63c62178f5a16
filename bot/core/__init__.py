"""The core: values, errors, the clock, codes, texts, the gate and every seam (protocols).

It imports the standard library only: no SDK, no disk, no process. Everything else in
pairbot may import it; it imports nothing of pairbot outside ``bot.core``.
"""
