/*
 * Test setup only, never part of the release: Debian 12's wine 8.0 has no
 * bcryptprimitives.dll, whose ProcessPrng the Rust standard library calls for
 * random bytes (HashMap seeds), so no Rust program starts under it. This DLL,
 * put in the test wine prefix's system32 by scripts/wine/prefix, exports
 * ProcessPrng through advapi32's RtlGenRandom (SystemFunction036), which wine
 * has. Windows 10 and later ship the real one.
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG chunk = length > 0x10000000 ? 0x10000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
