"""Time bounds the tests share, chosen so a busy machine never decides a test.

A lost answer is simulated by a server that does the work, then holds its answer for LOST_ANSWER_HANG; the client
gives up after LOST_ANSWER_TIMEOUT. The request must reach the server well before the client gives up, also with
both cores busy: no sub-second race.
"""

LOST_ANSWER_TIMEOUT = 2.0
LOST_ANSWER_HANG = 6.0

# Every call after the lost one (the retry, the polls that confirm) is given this much: only the lost call may time out.
RELAXED_TIMEOUT = 30.0
