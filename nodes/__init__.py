"""The pack's nodes (ComfyUI V3 API). Each module holds node classes only; the work is in fastdit/."""
from comfy_api.latest import ComfyExtension

from .compare import FastDiTCompare
from .demo import FastDiTDemoLoader, FastDiTDemoScene, FastDiTDemoTextEncode
from .fresco import FastDiTFrescoKSampler, FastDiTFrescoSampler
from .hicache import FastDiTHiCache
from .specedit import FastDiTSpecEditDraft, FastDiTSpecEditVerify
from .svdcache import FastDiTSVDCache, FastDiTSVDCacheCalibrate
from .testing import FastDiTTestControlNet, FastDiTTestModel

NODES = [FastDiTCompare, FastDiTTestModel, FastDiTTestControlNet, FastDiTDemoLoader, FastDiTDemoTextEncode, FastDiTDemoScene,
         FastDiTHiCache, FastDiTSVDCacheCalibrate, FastDiTSVDCache, FastDiTFrescoKSampler, FastDiTFrescoSampler,
         FastDiTSpecEditDraft, FastDiTSpecEditVerify]


class FastDiTExtension(ComfyExtension):
    async def get_node_list(self):
        return list(NODES)


async def comfy_entrypoint():
    return FastDiTExtension()
