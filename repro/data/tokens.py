"""Reserved token ids, as the official code: PAD=0, EOS=1, SOS=2; data tokens are offset by 3."""

PAD_ID = 0
EOS_ID = 1
SOS_ID = 2
NUM_RESERVED = 3
