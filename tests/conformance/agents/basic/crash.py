"""An agent that dies before it serves anything."""
import sys

print("crash.py: giving up at start", flush=True)
sys.exit(3)
