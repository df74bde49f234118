package harness

// ImportImage imports the image archive (ctr images import) into CRI's
// namespace, where the kubelet finds images with imagePullPolicy Never or
// IfNotPresent: there is no registry.
func (c *CRI) ImportImage(t T, archive string) {
	t.Helper()
	c.mustCtrCRI(t, "images", "import", archive)
}
