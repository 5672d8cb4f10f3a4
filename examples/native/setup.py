# Builds the two example extensions in place: `python setup.py build_ext --inplace` here, in an
# environment that has gdfast, Cython and setuptools. Nothing of gdfast is compiled or linked
# in: Cython reads gdfast/cython_api.pxd from the installed package, and the C extension needs
# only the headers in gdfast.get_include().
from Cython.Build import cythonize
from setuptools import Extension, setup

import gdfast

setup(
    name="gdfast-native-examples",
    version="0.1",
    ext_modules=[
        *cythonize([Extension("gdfast_example", ["gdfast_example.pyx"])]),
        Extension("gdfast_c_example", ["gdfast_c_example.c"], include_dirs=[gdfast.get_include()]),
    ],
)
