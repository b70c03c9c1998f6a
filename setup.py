"""maskaq-plugin: data-free MaskAQ quantization of ViT backbones for OpenMMLab, on NNCF."""
import os.path as osp

from setuptools import find_packages, setup


def read_requirements(name):
    path = osp.join(osp.dirname(__file__), 'requirements', name)
    with open(path) as f:
        return [ln.split('#')[0].strip() for ln in f if ln.split('#')[0].strip()]


def read_version():
    scope = {}
    with open(osp.join(osp.dirname(__file__), 'maskaq_plugin', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


setup(
    name='maskaq-plugin',
    version=read_version(),
    description='Data-free quantization of Vision Transformer backbones in OpenMMLab '
    '(MaskAQ, ICML 2026) with NNCF',
    long_description=open(osp.join(osp.dirname(__file__), 'README.md')).read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['maskaq_plugin', 'maskaq_plugin.*']),
    python_requires='>=3.10',
    install_requires=read_requirements('runtime.txt'),
    extras_require={'tests': read_requirements('tests.txt')},
    license='Apache-2.0',
    zip_safe=False,
)
