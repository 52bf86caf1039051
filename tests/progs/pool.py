# A computation on a thread pool of 4 that prints as it goes (checkpointed mid-run).
import hashlib
import sys
import time
from concurrent.futures import ThreadPoolExecutor


def work(i):
    h = hashlib.sha256()
    for k in range(4000):
        h.update(str(i * k).encode())
    return h.hexdigest()[:16]


with ThreadPoolExecutor(4) as ex:
    for step in range(int(sys.argv[1])):
        res = list(ex.map(work, range(step * 4, step * 4 + 4)))
        print(step, " ".join(res), flush=True)
        time.sleep(0.03)
print("done", flush=True)
