import os
import sys

# tests import their helpers (torch_ref) by module name
sys.path.insert(0, os.path.dirname(__file__))
