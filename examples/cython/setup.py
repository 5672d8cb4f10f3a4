# Builds the example extension: `pip install --no-build-isolation .` here, in an environment
# that has gdfast, Cython and setuptools. Nothing of gdfast is compiled or linked in: Cython
# reads gdfast/cython_api.pxd from the installed package.
from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    name="gdfast-example",
    version="0.1",
    ext_modules=cythonize([Extension("gdfast_example", ["gdfast_example.pyx"])]),
)
